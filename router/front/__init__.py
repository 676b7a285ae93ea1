"""Front: the scoring data plane, an HTTP/1.1 server on asyncio protocols and httptools.

`connection` parses what clients send and keeps responses in order; `scoring`
decides, without I/O, where a request goes (or which error it gets); `exchange`
streams one request to a replica and its answer back.
"""
