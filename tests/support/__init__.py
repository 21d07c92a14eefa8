"""What the tests share that is not a fixture (the fixtures are in tests/conftest.py, which
imports these). Test modules, bench/ and the fixtures import them from their module:

    paths      ROOT (the checkout) and LOG_DIR (the output of the processes the tests start)
    docker     TEST_IMAGE and docker_cli: the Docker CLI, to act and read back outside the panel
    waiting    wait_for
    processes  subprocess_env, Proc and free_port; start_worker and kill_worker for tests of
               dying workers
    cleanup    remove_test_resources (and the guard that refuses what is not the tests' own)
    sandboxes  act (an action carried out in the test's process), create_form (the New page's post)
    settings   base_settings: the settings as a production start-up reads them
    web        ws_headers: a signed-in browser's websocket handshake
    fakes      FakeEngine, the in-memory engine of the fast tier

A folder's own helpers stay beside its tests (tests/backups/helpers.py,
tests/sandboxes/network/helpers.py), as the folder mirrors its package.
"""
