"""Run by tests/test_forkserver.py through the fork server: says what it became, then
sleeps or exits with the status it is given."""

import json
import os
import sys
import time
import warnings

if __name__ == "__main__":
    out, code, sleep_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    facts = {
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "pgid_is_pid": os.getpgid(0) == os.getpid(),
        "sid_is_pid": os.getsid(0) == os.getpid(),
        "main_spec": __spec__.name if __spec__ else None,
        "first_filter": warnings.filters[0][0] if warnings.filters else None,
    }
    with open(out, "w") as handle:
        json.dump(facts, handle)
    print("stdout line", flush=True)
    print("stderr line", file=sys.stderr, flush=True)
    time.sleep(sleep_s)
    sys.exit(code)
