#!/bin/sh
# An acquisition PC: a fresh host key, published for the rig; then its control service (a Unix socket
# in the control volume, for the tests that cut its link, restart its sshd or add a user), which runs sshd.
set -eu
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
cp /etc/ssh/ssh_host_ed25519_key.pub "/keys/$(hostname).pub"
exec python -m heron_remote.testing "/control/$(hostname).sock" \
    --host-key /etc/ssh/ssh_host_ed25519_key --authorized-keys /keys/authorized_keys
