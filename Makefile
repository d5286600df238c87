# Concord — the two commands a newcomer needs are `make run` and `make test`.
.PHONY: run test build release deps bench-http bench-locks raft-seeds clean

run:            ## install what is missing, build, start a 3-node dev cluster with its own Redis
	./scripts/run.sh

test:           ## every test (starts its own redis-server instances on free ports)
	./scripts/test.sh

deps:
	./scripts/deps.sh

build:
	swift build

release:
	swift build -c release --product concord

raft-seeds:     ## many more Raft simulation seeds, e.g. make raft-seeds SEEDS=100000
	RAFT_SIM_SEEDS=$${SEEDS:-100000} swift test -c release -Xswiftc -enable-testing --scratch-path .build-release-tests --filter RaftTests.SimulationTests/testSeededSimulation

clean:
	rm -rf .build .build-*
