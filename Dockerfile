# One image for the rig and the acquisition PCs of docker-compose.yml: sshd, Python, heron_remote.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-server openssh-client iproute2 procps \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/sshd
WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir -e '.[test]'
