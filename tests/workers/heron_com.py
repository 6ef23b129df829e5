"""A com script written the Heron way; settings come from HERON_REMOTE_* variables.

argv: worker_exec [verbose_string [ssh_remote_server_id]]
Prints "COM READY <worker pid> <the worker's ports, JSON>" once the worker runs and "COM EXIT" after
start_ioloop returns.
"""

import json
import logging
import signal
import sys

from heron_remote import SourceCom

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
com = SourceCom(
    sending_topics=["Counter##echo##1", "Echo##echo##1"],
    parameters_topic="Parameters##echo##1",
    port=0,
    worker_exec=sys.argv[1],
    verbose=sys.argv[2] if len(sys.argv) > 2 else "||",
    outputs=["Counter", "Echo"],
    ssh_local_server_id="None" if len(sys.argv) < 4 else "rig",
    ssh_remote_server_id=sys.argv[3] if len(sys.argv) > 3 else "None",
)
com.connect_sockets()
com.start_heartbeat_thread()
com.start_worker_process()
signal.signal(signal.SIGTERM, com.on_kill)
signal.signal(signal.SIGINT, com.on_kill)
ports = json.dumps(com.launcher.ready.ports if com.launcher and com.launcher.ready else {}, separators=(",", ":"))
print(f"COM READY {com.stats.worker_pid} {ports}", flush=True)
com.start_ioloop()
print("COM EXIT", flush=True)
