"""One exception family. Library code raises these with a message that names the fix; only the
CLI turns them into a single line on stderr and exit code 2. Anything else is a bug."""


class BitexportError(Exception):
    """Base of every error a user can act on."""


class InputError(BitexportError):
    """The model folder (or another input path) is missing, malformed or unsupported."""


class BundleError(BitexportError):
    """A bundle is missing, incomplete, corrupt or would be overwritten."""


class TargetError(BitexportError):
    """A target or weight format was asked for that cannot be produced."""


class EnvironmentProblem(BitexportError):
    """This machine lacks something a step needs (a compiler, a runtime, a kernel library)."""


def require(module: str, pip_spec: str):
    """Import `module`, or raise EnvironmentProblem naming the pip requirement that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EnvironmentProblem(f"{module} is not importable ({e}); pip install '{pip_spec}'") from None
