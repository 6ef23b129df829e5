#!/bin/sh
# An acquisition PC: a fresh host key, published for the rig; the rig's user key authorised; sshd.
set -eu
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
cp /etc/ssh/ssh_host_ed25519_key.pub "/keys/$(hostname).pub"
cat > /etc/ssh/sshd_config.d/heron-remote.conf <<CONF
HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /keys/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxSessions 100
MaxStartups 100
CONF
exec /usr/sbin/sshd -D -e
