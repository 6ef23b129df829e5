# One image for the rig and the acquisition PCs of docker-compose.yml: sshd, Python, heron_remote.
# BASE: the official Python image where a registry is reachable; where none is, the Debian image that
# docker/build-base-image.sh builds from the archive (it has the system packages and the dependencies
# already, so every step below then runs without a network).
ARG BASE=python:3.11-slim
FROM ${BASE}
RUN dpkg -s openssh-server openssh-client iproute2 procps iptables >/dev/null 2>&1 \
 || { apt-get update \
      && apt-get install -y --no-install-recommends openssh-server openssh-client iproute2 procps iptables \
      && rm -rf /var/lib/apt/lists/*; } \
 && mkdir -p /run/sshd
WORKDIR /src
COPY . /src
# Without build isolation, so that nothing is fetched when the base has it all.
RUN python -m pip install --no-cache-dir --disable-pip-version-check 'setuptools>=68' \
 && python -m pip install --no-cache-dir --disable-pip-version-check --no-build-isolation -e '.[test]'
