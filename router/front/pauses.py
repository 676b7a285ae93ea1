"""Why a client connection stopped reading. Reading resumes only when no reason is left."""

PIPELINE = 1  # requests queued behind the one being answered
PENDING = 2  # a body buffered while its request waits for a replica
UPSTREAM = 4  # the replica is not taking the body as fast as it comes
DRAINING = 8  # nothing more is read on this connection (an error to send once the others are answered)
OUTPUT = 16  # the client is not reading its answers: nothing more is read until it does
