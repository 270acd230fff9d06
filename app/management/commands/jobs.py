"""Dead-letter tooling: ``jobs dead``, ``jobs replay``, ``jobs purge``, ``jobs cancel``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from app import deadletters
from app.records import record_request_cancel


class Command(BaseCommand):
    help = "List, replay and purge dead jobs; cancel a job."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        dead = sub.add_parser("dead", help="list dead jobs per queue, with reason and error")
        dead.add_argument("--queue")
        replay = sub.add_parser("replay", help="publish dead jobs again")
        replay.add_argument("job_ids", nargs="*", help="ids to replay (default: see --all)")
        replay.add_argument("--queue")
        replay.add_argument("--task", help="only dead jobs of this task name")
        replay.add_argument("--all", action="store_true", help="every dead job that matches")
        purge = sub.add_parser("purge", help="drop dead messages (records stay)")
        purge.add_argument("--queue")
        purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        cancel = sub.add_parser("cancel", help="cancel a queued or running tracked job")
        cancel.add_argument("job_id")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, f"handle_{action}")(**options)
        except deadletters.DeadLetterError as exc:
            raise CommandError(str(exc)) from None

    def handle_dead(self, *, queue: str | None, **options: Any) -> None:
        letters = deadletters.dead_letters_list(queue)
        if not letters:
            self.stdout.write("no dead jobs")
        for name in dict.fromkeys(letter.queue for letter in letters):
            mine = [letter for letter in letters if letter.queue == name]
            self.stdout.write(f"{name}.dead: {len(mine)}")
            for letter in mine:
                died = letter.died_at.isoformat() if letter.died_at else "?"
                self.stdout.write(
                    f"  {letter.job_id}  {letter.task_name}  {letter.reason} at {died}"
                    + (f"  {letter.error}" if letter.error else "")
                )

    def handle_replay(
        self, *, job_ids: list[str], queue: str | None, task: str | None, all: bool, **opts: Any
    ) -> None:
        if not job_ids and not all:
            raise CommandError("name the job ids to replay, or pass --all (with --queue/--task)")
        replayed = deadletters.dead_letters_replay(
            job_ids=job_ids or None, queue=queue, task_name=task
        )
        for old, new in replayed:
            self.stdout.write(f"replayed {old} as {new}")
        self.stdout.write(f"{len(replayed)} replayed")

    def handle_purge(self, *, queue: str | None, yes: bool, **options: Any) -> None:
        def confirm(count: int) -> bool:
            if yes:
                return True
            answer = input(f"Drop {count} dead messages for good? Type 'yes': ")
            return answer.strip() == "yes"

        purged = deadletters.dead_letters_purge(queue=queue, confirm=confirm)
        self.stdout.write(f"{purged} purged")

    def handle_cancel(self, *, job_id: str, **options: Any) -> None:
        status = record_request_cancel(job_id=deadletters.job_id_parse(job_id))
        if status is None:
            raise CommandError(f"job {job_id} is unknown or already ended: nothing to cancel")
        self.stdout.write(f"job {job_id}: {status}")
