"""The engine: the queue (client side), the worker loop, running one task, leases."""
