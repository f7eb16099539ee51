"""Third-party notices that a run drops from its output, each for a stated reason.

Ray logs "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out"
every time a local run starts its own cluster with RAY_AUTH_MODE unset. Token authentication stays on
(Ray's default, and what a cluster reachable from the network needs); only the line goes. Setting
RAY_AUTH_MODE=token ourselves would also silence it, but then Ray skips creating the token on a first
run and its GCS server dies at start-up.
"""

from __future__ import annotations

import logging

RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
RAY_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"


class _DropNotice(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_auth_notice() -> None:
    """Drop Ray's token-auth notice (idempotent; call before `ray.init`)."""
    logger = logging.getLogger(RAY_AUTH_LOGGER)
    if not any(isinstance(f, _DropNotice) for f in logger.filters):
        logger.addFilter(_DropNotice(RAY_AUTH_NOTICE))
