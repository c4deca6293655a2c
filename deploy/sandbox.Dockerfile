# pitrdrill/sandbox:15 — one sandbox PostgreSQL 15 server, and nothing that is not needed to
# run it: Debian's postgresql-15 (no cluster is created), the tools the sandbox's read-only
# restore_command may call (gzip from the base, zstd and lz4 for compressed archives,
# pgBackRest's archive-get for a pgBackRest source), and the locales named in LOCALES (a
# restored cluster whose databases use a locale the OS lacks refuses connections).
# PostgreSQL's LLVM JIT is left out (libLLVM, its bitcode and libz3: 155 MB): replay and checks
# do not need it, and a server without its JIT provider runs with JIT unavailable.
#
# Built by `make images` FROM the local pitrdrill/debian:12 (debootstrap): no registry image.
# PG_UID/PG_GID are the host's `postgres` uid/gid, so that a data directory bind-mounted from
# the host (owned by the host's postgres) is the server's own. The provider runs it as
#   docker run -u postgres -v SANDBOX:/sandbox -v ARCHIVE:/archive:ro -v BACKUP:/backup:ro \
#     pitrdrill/sandbox:15 postgres -D /sandbox/data -c ...
# (see deploy/README.md).
FROM pitrdrill/debian:12
ARG PG_UID=999
ARG PG_GID=999
ARG LOCALES="en_US.UTF-8"
RUN printf '%s\n' 'path-exclude /usr/lib/postgresql/*/lib/bitcode/*' \
      'path-exclude /usr/lib/postgresql/*/lib/llvmjit*' 'path-exclude /usr/lib/*/libLLVM*' \
      'path-exclude /usr/lib/*/libz3.so*' >/etc/dpkg/dpkg.cfg.d/pitrdrill-no-jit \
 && groupadd --system --non-unique --gid "$PG_GID" postgres \
 && useradd --system --non-unique --uid "$PG_UID" --gid postgres --home-dir /var/lib/postgresql \
      --shell /bin/bash --comment "PostgreSQL administrator" postgres \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 zstd lz4 pgbackrest locales >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log \
 && for locale in $LOCALES; do \
      sed -i "s/^# *\($locale \)/\1/" /etc/locale.gen; done \
 && locale-gen >/dev/null \
 && test -z "$(ls /etc/postgresql/ 2>/dev/null)" \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql \
 && install -d -o postgres -g postgres -m 0700 /sandbox \
 && install -d -m 0755 /archive /backup /etc/pitrdrill \
 && rm -f /etc/pgbackrest.conf
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8
USER postgres
# Fast shutdown (SIGTERM would be PostgreSQL's "smart" shutdown, waiting for every client).
STOPSIGNAL SIGINT
CMD ["postgres", "--version"]
