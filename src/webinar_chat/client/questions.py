"""`QuestionBoard`: a joined webinar's Q&A as this user sees it (`Room.questions`), kept from
QUESTION events with the convergence rule of the whole feed — per question, the state of the
highest seq applied wins, so a client that replayed, long-polled or re-listed ends where one that
watched live does (docs/webinar-features.md, "Q&A"). Pure: no I/O.

The user's own votes are personal and never in events: they come from the list
(`GET …/questions`, each with `voted`) and from this user's own vote answers (`remember_vote`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from .feed import Question

SORTS = ("votes", "newest")


class QuestionBoard:
    def __init__(self) -> None:
        self._questions: dict[int, Question] = {}
        self._seqs: dict[int, int] = {}  # question id → seq of the state held (removed ones too)
        self._voted: dict[int, bool] = {}

    def apply(self, question_id: int, state: Question | None, seq: int) -> bool:
        """Take the state of `question_id` at feed position `seq` (None or a redacted stub:
        gone from view), unless a newer one is applied. True when it was taken."""
        if seq <= self._seqs.get(question_id, -1):
            return False
        self._seqs[question_id] = seq
        if state is None or state.hidden:
            self._questions.pop(question_id, None)
        else:
            self._questions[question_id] = replace(state, voted=None)
        return True

    def load(self, questions: Iterable[Question]) -> None:
        """A list answer: each question at its own seq, and the user's own votes."""
        for question in questions:
            self.apply(question.id, question, question.seq)
            if question.voted is not None:
                self._voted[question.id] = question.voted

    def remember_vote(self, question_id: int, voted: bool) -> None:
        self._voted[question_id] = voted

    def voted(self, question_id: int) -> bool:
        return self._voted.get(question_id, False)

    def get(self, question_id: int) -> Question | None:
        question = self._questions.get(question_id)
        return None if question is None else replace(question,
                                                      voted=self.voted(question_id))

    def sorted(self, by: str = "votes") -> list[Question]:
        """Visible questions, each with this user's `voted`: most votes first (then oldest), or
        newest first — the server's orders."""
        if by not in SORTS:
            raise ValueError(f"by must be one of {SORTS}")
        found = list(self._questions.values())
        if by == "votes":
            found.sort(key=lambda q: (-q.votes, q.id))
        else:
            found.sort(key=lambda q: -q.id)
        return [replace(q, voted=self.voted(q.id)) for q in found]

    def __len__(self) -> int:
        return len(self._questions)

    def __contains__(self, question_id: object) -> bool:
        return question_id in self._questions
