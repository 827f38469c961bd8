"""The web console (issue 19): server-rendered pages under ``/ui`` over the same services as the API."""
