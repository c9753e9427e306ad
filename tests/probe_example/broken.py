"""An app that does not import: the probe must show the import error's last line."""

import a_module_that_is_not_installed_anywhere  # noqa: F401

app = None
