"""The wire: frames, serialization and TLS, shared by both ends of a connection.

```
 controller                                            worker
 encode(kind, meta, buffers) ─► length-prefixed frame ─► Decoder ─► (kind, meta, buffers)
 TLS (_tls): none | automatic (one-time CA) | custom     client context: verify the controller
```

``_frames`` holds the frame layout, the handshake's MACs and the socket
options both ends set; ``_pickling``, pickling with out-of-band buffers (and
cloudpickle for what a worker cannot import); ``_shm``, shared memory with a
peer on the same machine; ``_tls`` turns a ``TLS`` setting into SSL
contexts. Nothing here knows about tasks or workers.
"""
