"""The webhook dispatcher: job events → signed, retried, SSRF-guarded POSTs. See `dispatcher.py`.

Nothing is imported here eagerly: the service imports `addresses` and `status_view` alone.
"""
