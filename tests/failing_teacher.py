"""A teacher whose endpoint goes down mid-run, for the tests of resuming an interrupted run."""

from sml.dialogue.teacher import ScriptedTeacher


class FailingTeacher(ScriptedTeacher):
    """The scripted teacher, until its ``fail_after``-th batch of replies: then it raises, like an endpoint
    that went down. ``batches`` counts the batches it was asked for."""

    def __init__(self, fail_after):
        super().__init__()
        self.fail_after, self.batches = fail_after, 0

    def reply_batch(self, views):
        self.batches += bool(views)
        if self.batches > self.fail_after:
            raise RuntimeError("teacher endpoint http://teacher/v1 failed after 4 attempts")
        return super().reply_batch(views)
