"""The fast data path: a protocol-level HTTP/1.1 forwarder (uvloop transports, httptools)."""
