"""Server configuration for the UI tests: the only place where security is relaxed.

Galata's helper turns off the token and XSRF checks and serves from a fresh temporary root
dir; each server start also gets a fresh jupyter-mage database.
"""

import os
import tempfile

from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # noqa: F821

# CI runs as root; the server refuses to start as root without this.
c.ServerApp.allow_root = True  # noqa: F821
# A fresh database for every server start, so the tests see only their own triggers and runs.
c.MageApp.db_url = f"sqlite:///{tempfile.mkdtemp(prefix='jupyter-mage-ui-')}/mage.sqlite"  # noqa: F821

# One UI test checks how the frontend explains a missing server extension: that server runs
# with jupyter_mage turned off.
if os.environ.get("MAGE_UI_TESTS_NO_SERVER_EXTENSION") == "1":
    c.ServerApp.jpserver_extensions = {"jupyter_mage": False}  # noqa: F821
