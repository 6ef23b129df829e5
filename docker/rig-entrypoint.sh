#!/bin/sh
# The rig: a user key for the acquisition PCs, their host keys in known_hosts, and the registry.
set -eu
[ -f /keys/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f /keys/id_ed25519
cp /keys/id_ed25519.pub /keys/authorized_keys
: > /keys/known_hosts
for host in acq1 acq2; do
    tries=0
    # The published key must be the one the host's sshd serves now (the volume outlives runs).
    until [ -f "/keys/$host.pub" ] && ssh-keyscan -t ed25519 "$host" 2>/dev/null | grep -qF "$(cut -d' ' -f2 "/keys/$host.pub")"; do
        tries=$((tries + 1))
        [ "$tries" -le 120 ] || { echo "no host key from $host after 60 s" >&2; exit 1; }
        sleep 0.5
    done
    echo "$host $(cut -d' ' -f1,2 "/keys/$host.pub")" >> /keys/known_hosts
done
# The PCs run the same image: the interpreter that has heron_remote here has it there (an SSH login's
# PATH may find another python3 first).
python=$(command -v python3)
cat > /keys/ssh_info.json <<JSON
{"0": {"Name": "acq1", "IP": "acq1", "Port": 22, "username": "root", "password": "None",
       "key_file": "/keys/id_ed25519", "known_hosts": "/keys/known_hosts", "python": "$python"},
 "1": {"Name": "acq2", "IP": "acq2", "Port": 22, "username": "root", "password": "None",
       "key_file": "/keys/id_ed25519", "known_hosts": "/keys/known_hosts", "python": "$python"}}
JSON
exec "$@"
