"""hpcray's private core: the runtime behind the public modules. Nothing here is public API."""
