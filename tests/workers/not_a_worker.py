"""Test program that never announces itself as a worker."""

import time

time.sleep(60)
