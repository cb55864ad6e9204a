# The only two commands a newcomer needs on a fresh Debian machine (as root).
.PHONY: test test-modal demo setup clean

test:
	tools/test.sh

# The integration targets against a real Modal account (see docs/testing.md); it costs money and asks first.
test-modal:
	tools/test_modal.sh

demo:
	tools/demo.sh

setup:
	tools/setup.sh

clean:
	rm -rf build
