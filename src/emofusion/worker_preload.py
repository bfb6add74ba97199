"""Imported by the server process that a `kedro run`'s per-clip workers are forked from, when the
command starts it (emofusion.worker_server.start_for_kedro_run): every per-clip node's module and
the submodules each names in `WORKER_IMPORTS`, so that each worker starts with them imported. The
command's own process does not import them for it."""

from emofusion.engine import import_modules
from emofusion.worker_server import PER_CLIP_NODE_MODULES

import_modules(PER_CLIP_NODE_MODULES)
