"""Settings shared by every test folder: the hypothesis profiles of the property tests.

CI runs the ``ci`` profile (a modest number of examples, no deadline: the
machine is shared and an example may start processes); ``HYPOTHESIS_PROFILE=long``
runs many more examples, e.g. ``HYPOTHESIS_PROFILE=long nox -s tests -- -k properties``.
"""

from __future__ import annotations

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # a checkout without the dev tools: only the property tests need it
    pass
else:
    _QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=_QUIET,
                              print_blob=True)  # fmt: skip
    settings.register_profile("long", max_examples=2000, deadline=None,
                              suppress_health_check=_QUIET, print_blob=True)  # fmt: skip
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
