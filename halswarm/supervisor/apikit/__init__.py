"""What every feature router uses: the SPEC 6 envelope and errors, and typed request dependencies.

Feature modules (``supervisor/features/<name>/api.py``) import this kit, never ``supervisor/http``
(which composes the routers into the app) and never the ``Supervisor`` object.
"""
