"""Fresh kernels at fork speed: a pre-imported parent process forks each new kernel.

Starting an IPython kernel costs about a quarter of a second of CPU, nearly all of it importing
IPython, ipykernel, zmq and tornado. A *fork parent* (:mod:`.parent`), started once per kernel
interpreter with that interpreter, does those imports once and then waits; each new kernel is a
``fork()`` of it that only builds its kernel app. Every kernel is still a process no other run
used, with its own pid, a fresh namespace and the environment and folder the server asked for.

The parts:

- :mod:`.parent` runs in the kernel's environment (stdlib and ipykernel only, no jupyter-mage).
  It has no threads and runs no user code, so a fork of it is as clean as a new interpreter.
- :mod:`.parents` is the server's side: one parent per interpreter, started on first use, and
  the fork request over a Unix socket (the child reports the ports it bound, so there is no port
  race, and the parent reports the child's exit).
- :mod:`.provisioner` is a jupyter_client kernel provisioner, so the server's kernel manager
  still owns, signals, interrupts and shuts down every kernel. It forks only the kernels the run
  pool marks (:data:`FORK_REQUEST`) whose spec is a plain ``python -m ipykernel_launcher``; every
  other kernel starts exactly as with jupyter_client's ``LocalProvisioner``.
"""

from __future__ import annotations

#: Environment variable the run pool sets on the kernels it wants forked (removed before launch).
FORK_REQUEST = "JUPYTER_MAGE_FORK"
#: The provisioner's entry point name (``jupyter_client.kernel_provisioners``).
PROVISIONER_NAME = "jupyter-mage-forking-provisioner"
