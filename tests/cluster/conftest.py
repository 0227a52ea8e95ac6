"""The `cluster` marker (pyproject's --strict-markers needs every marker registered)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cluster: runs the workflow on a real one-node SLURM cluster started by the test "
        "(root; installs Debian's slurm-wlm and munge where missing)",
    )
