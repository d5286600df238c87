# Multi-stage build of the `concord` executable (Debian 12 + Swift 6).
FROM swift:6.0-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libhiredis-dev libevent-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product concord --static-swift-stdlib

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libhiredis0.14 libevent-2.1-7 libevent-pthreads-2.1-7 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/.build/release/concord /usr/local/bin/concord
COPY lua /usr/local/share/concord/lua
ENV CONCORD_LUA_DIR=/usr/local/share/concord/lua
EXPOSE 8001
HEALTHCHECK --interval=5s --timeout=2s CMD curl -fsS http://127.0.0.1:8001/health || exit 1
ENTRYPOINT ["/usr/local/bin/concord"]
CMD ["node"]
