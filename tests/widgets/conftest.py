import pytest


@pytest.fixture(scope="session", autouse=True)
def collect_garbage_on_the_ui_thread(qapp):
    """As the app does while its window is open (widgets/gui_thread_gc.py), for the whole GUI run:
    the Qt garbage of one test must not be freed by the next test's session threads."""
    from widgets import gui_thread_gc
    gui_thread_gc.hold()
    yield
    gui_thread_gc.release()
