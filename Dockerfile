# meshfleet: the fleet and the head-end in one image.
#   docker build -t meshfleet .
#   docker run --rm meshfleet demo --devices 200
# The fleet's per-device IPv6 addresses need the local route of its prefix,
# which needs NET_ADMIN: run it with --cap-add NET_ADMIN (and --user root), or
# without it in loopback mode (one port per device). See README.md.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/meshfleet
COPY pyproject.toml README.md ./
COPY emulator ./emulator
COPY fleet_configs ./fleet_configs
RUN pip install . \
    && useradd --system --create-home --home-dir /var/lib/meshfleet meshfleet

USER meshfleet
WORKDIR /var/lib/meshfleet
# CSMP (UDP), NB API / metrics / web (TCP), fleet metrics and control (TCP)
EXPOSE 61628/udp 8080/tcp 9100/tcp
ENTRYPOINT ["meshfleet"]
CMD ["--help"]
