"""``hbtui run``: unmodified CUDA programs under an engine (issue 15; docs/attach.md).

- ``hbtui.attach.build``: compiles the LD_PRELOAD interceptor (``native/intercept.c``).
- ``hbtui.attach.layout``: the shared-memory layout (``native/hbtui_shm.h``) in ctypes.
- ``hbtui.attach.segment``: segment create/remove, and ``Attachment``, the engine's
  handle on one attached program (records, completions, the LP gate, heartbeat).
- ``hbtui.attach.control``: the attach/detach control-plane client.
- ``hbtui.attach.launcher``: the ``hbtui run`` command.

No Textual, no console: this package may import ``hbtui.engine`` modules only.
"""
