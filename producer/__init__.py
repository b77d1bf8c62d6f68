"""smsbulk's client side: the job contract and the enqueue client.

Other applications install and import this package only; it never imports
``worker``.
"""

from producer.client import NoSuchJob, Producer
from producer.control import InvalidResume, InvalidRetry, JobStateConflict
from producer.errors import SmsbulkError
from producer.job import Job, JobExists, JobRefused, JobSpec, JobStatus, Message, Outcome

__all__ = [
    "InvalidResume",
    "InvalidRetry",
    "JobStateConflict",
    "Job",
    "JobExists",
    "JobRefused",
    "JobSpec",
    "JobStatus",
    "Message",
    "NoSuchJob",
    "Outcome",
    "Producer",
    "SmsbulkError",
]
