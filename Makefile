# The only two commands a newcomer needs on a fresh Debian machine (as root).
.PHONY: test demo setup clean

test:
	tools/test.sh

demo:
	tools/demo.sh

setup:
	tools/setup.sh

clean:
	rm -rf build
