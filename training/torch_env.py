"""Process settings the training modules need in place before torch is first imported.

Every training module that imports torch imports this first. It is not in ``training/__init__`` so
that importing the settings alone (the command line builds its flags from them, also for
``persona serve``) changes nothing for the server.
"""

from __future__ import annotations

import logging
import os

# Training usually shares the cores with the server or other programs. OpenMP worker threads that
# spin while they wait turn every step into a crawl as soon as another process holds a core, so they
# sleep instead unless told otherwise. (libgomp reads this once, when torch is first imported.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# bitsandbytes (imported by peft) tries to fetch an optional CPU kernel from a model hub, warns when it
# cannot, and uses its built-in kernel: the warning is noise for every run here.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
