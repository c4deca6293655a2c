# pitrdrill/primary — the compose file's demo primary: the sandbox image's PostgreSQL 15 with
# WAL archiving into /backups/wal, a pg_basebackup in /backups/base, a staged incident and the
# drill spec that recovers from it (/backups/drill.yaml). See deploy/primary-entrypoint.sh.
FROM pitrdrill/sandbox:15
USER root
RUN install -d -o postgres -g postgres -m 0755 /backups \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
COPY primary-entrypoint.sh /usr/local/bin/pitrdrill-primary
USER postgres
ENV PGDATA=/var/lib/postgresql/data BACKUPS=/backups PGHOST=/var/run/postgresql
# Healthy once the backup, the archived incident and the drill spec are all there.
HEALTHCHECK --interval=2s --timeout=5s --retries=150 CMD ["test", "-f", "/backups/drill.yaml"]
ENTRYPOINT ["pitrdrill-primary"]
