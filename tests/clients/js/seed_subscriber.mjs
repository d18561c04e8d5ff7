// @supabase/supabase-js 2.119.0, unmodified, subscribed the way the seed's page did
// (docs/supabase.md): setAuth(token), then channel('webinar:N:messages').on('postgres_changes',
// {event: '*', schema: 'public', table: 'messages', filter: 'webinar_id=eq.N'}).subscribe(cb).
// Reports every status and change on stdout, one JSON object per line, until it is killed.
// MODE `setauth` is the seed's code as it was; `accesstoken` the one-line change docs/supabase.md
// asks for so that a reconnect (a new socket) still has the user's token:
// createClient(url, key, {accessToken: async () => token}).
//
// Usage: node --experimental-websocket seed_subscriber.mjs BASE_URL APIKEY TOKEN WEBINAR_ID MODE
import { createClient } from '@supabase/supabase-js';

const [base, apikey, token, webinar, mode = 'setauth'] = process.argv.slice(2);
const out = (fields) => process.stdout.write(`${JSON.stringify(fields)}\n`);

const options = { auth: { persistSession: false } };
if (mode === 'accesstoken') options.accessToken = async () => token;
const supabase = createClient(base, apikey, options);
if (mode === 'setauth') await supabase.realtime.setAuth(token);
supabase
  .channel(`webinar:${webinar}:messages`)
  .on('postgres_changes', { event: '*', schema: 'public', table: 'messages',
    filter: `webinar_id=eq.${webinar}` }, (payload) => out({ kind: 'change', payload }))
  .on('system', {}, (payload) => out({ kind: 'system', payload }))
  .subscribe((state, error) => out({ kind: 'status', state,
    error: error ? String(error.message || error) : null }));
