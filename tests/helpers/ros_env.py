"""The ROS 2 environment for tests: the colcon install of lisa_ros, loopback-only DDS.

scripts/setup.sh builds the package into <repo>/install/lisa_ros with the venv's ROS
wheels. `ros_environment()` gives the variables a ROS process needs to use it (no
setup.bash sourcing); `activate()` applies them to this process before rclpy starts.

Every ROS process on these machines must keep DDS on loopback:
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and its own ROS_DOMAIN_ID (one per test
session, from the pid, in 1..101).
"""

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "install" / "lisa_ros"
SITE = INSTALL / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
NODE_EXECUTABLE = INSTALL / "lib" / "lisa_ros" / "lisa_node"
DOMAIN_ID = 1 + os.getpid() % 101  # 1..101: valid for Fast DDS' port arithmetic, never the default 0


def missing() -> str:
    """Why the ROS tests cannot run here ("" when they can)."""
    try:
        import rclpy  # noqa: F401
    except ImportError as error:
        return f"rclpy is not installed ({error}); run scripts/setup.sh"
    if not (SITE / "lisa_ros" / "msg").is_dir() or not NODE_EXECUTABLE.exists():
        return f"lisa_ros is not built in {INSTALL}; run scripts/setup.sh"
    return ""


def ros_environment(home: Path, base: dict | None = None) -> dict:
    """Environment variables for a ROS process using the lisa_ros install.

    Arguments:
        home (Path): a temporary folder for ROS_HOME and ROS_LOG_DIR.
        base (dict | None): the environment to extend (default: os.environ).
    """
    env = dict(os.environ if base is None else base)
    prefixes = [str(INSTALL), sys.prefix]
    existing = [part for part in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if part and part not in prefixes]
    pythonpath = [str(SITE)] + [part for part in env.get("PYTHONPATH", "").split(os.pathsep) if part]
    libraries = [str(INSTALL / "lib")] + [part for part in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if part]
    env.update(
        LD_LIBRARY_PATH=os.pathsep.join(libraries),
        AMENT_PREFIX_PATH=os.pathsep.join(prefixes + existing),
        PYTHONPATH=os.pathsep.join(pythonpath),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(DOMAIN_ID),
        ROS_HOME=str(home),
        ROS_LOG_DIR=str(Path(home) / "log"),
        RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
        PYTHONUNBUFFERED="1",
    )
    env.pop("ROS_LOCALHOST_ONLY", None)  # ignored by Kilted; avoid the deprecation warning
    env.pop("ROS_STATIC_PEERS", None)
    return env


def activate(home: Path) -> dict:
    """Apply ros_environment(home) to this process (call before rclpy.init) and make the
    generated lisa_ros.msg/.srv/.action importable here; returns the environment."""
    env = ros_environment(home)
    for name in (
        "AMENT_PREFIX_PATH",
        "ROS_AUTOMATIC_DISCOVERY_RANGE",
        "ROS_DOMAIN_ID",
        "ROS_HOME",
        "ROS_LOG_DIR",
        "RMW_IMPLEMENTATION",
    ):
        os.environ[name] = env[name]
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.pop("ROS_STATIC_PEERS", None)
    if str(SITE) not in sys.path:
        sys.path.append(str(SITE))
    _preload_libraries()
    import lisa_ros  # the source package may be imported already: extend its __path__ too

    generated = str(SITE / "lisa_ros")
    if generated not in lisa_ros.__path__:
        lisa_ros.__path__.append(generated)
    return env


def _preload_libraries() -> None:
    """Load the package's type support libraries into this process.

    ROS finds them with dlopen by bare name, which searches the LD_LIBRARY_PATH this
    process started with; a library already loaded matches by name instead.
    """
    pending = sorted((INSTALL / "lib").glob("liblisa_ros__*.so"))
    while pending:  # load in dependency order: retry what fails until nothing loads
        failed = []
        for path in pending:
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(path)
        if len(failed) == len(pending):
            raise OSError(f"cannot load {', '.join(p.name for p in failed)}")
        pending = failed


@contextmanager
def spinning_client(home: Path, make_client):
    """A test client in this process, spinning on its own thread in its own rclpy context.

    Arguments:
        home (Path): ROS_HOME for `activate`.
        make_client (callable): context -> an object whose `.node` is an rclpy Node.
    """
    activate(home)
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor

    context = Context()
    rclpy.init(context=context)
    client = make_client(context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(client.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield client
    finally:
        executor.shutdown()
        client.node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(5)


# --- lisa_node in its own process ------------------------------------------------------
STARTUP_TIMEOUT = 90.0
TIMEOUT = 30.0


def start_node(ros_home, namespace: str, *parameters: str, activate: bool = True, cameras=()) -> "NodeProcess":
    """Start lisa_node (tiny model, cpu) in `namespace` with extra `name:=value` parameters.

    The node never activates itself: with `activate` this configures and activates it through
    its lifecycle services, as the launch file's autostart does (every camera's node with
    `cameras`, started with --cameras). Returns once it is active; fails the test when it is not.

    cameras: names (`--cameras front,wrist`, as typed by hand: each in `namespace`/name), or
    lisa_ros.runtime.launch_config.Camera objects (the launch file's JSON, with remappings).
    """
    from lisa_ros.runtime.launch_config import cameras_argument

    log_path = ros_home / f"lisa_node{namespace.replace('/', '_')}.log"
    env = ros_environment(ros_home)
    env["OMP_NUM_THREADS"] = "1"
    by_name = all(isinstance(camera, str) for camera in cameras)
    command = [str(NODE_EXECUTABLE)]
    if cameras:
        command += ["--cameras", ",".join(cameras) if by_name else cameras_argument(list(cameras))]
    command += ["--ros-args", "-r", f"__ns:={namespace}", "-p", "device:=cpu"]
    for parameter in parameters:
        command += ["-p", parameter]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    node = NodeProcess(process, log_path)
    if activate:
        namespaces = [f"{namespace}/{camera}" if by_name else camera.namespace for camera in cameras]
        names = [f"{camera_namespace}/lisa" for camera_namespace in namespaces] or [f"{namespace}/lisa"]
        try:
            with lifecycle_client(ros_home) as lifecycle:
                for name in names:
                    for transition in ("configure", "activate"):
                        lifecycle.change(name, transition, node)
        except BaseException:
            node.stop()
            raise
    return node


class LifecycleClient:
    """Calls a lifecycle node's change_state and get_state services (lifecycle_msgs)."""

    STATE_AFTER = {"configure": "inactive", "activate": "active", "deactivate": "inactive",
                   "cleanup": "unconfigured", "shutdown": "finalized"}  # fmt: skip

    def __init__(self, node, executor):
        self.node, self.executor = node, executor

    def _call(self, service_type, name: str, request, process: "NodeProcess", timeout: float):
        client = self.node.create_client(service_type, name)
        try:
            wait_until(lambda: client.service_is_ready(), process, STARTUP_TIMEOUT, f"offering {name}")
            future = client.call_async(request)
            self.executor.spin_until_future_complete(future, timeout_sec=timeout)
            return future.result() if future.done() else None
        finally:
            self.node.destroy_client(client)

    def state(self, node_name: str, process: "NodeProcess") -> str:
        """The node's lifecycle state label ("unconfigured", "inactive", "active", ...)."""
        from lifecycle_msgs.srv import GetState

        # A request sent before the reply path is matched can be lost: ask again.
        for _ in range(5):
            response = self._call(GetState, f"{node_name}/get_state", GetState.Request(), process, 10.0)
            if response is not None:
                return response.current_state.label
        pytest.fail(f"no answer from {node_name}/get_state:\n{process.log()}")

    def change(self, node_name: str, transition: str, process: "NodeProcess", expect: bool = True) -> bool:
        """Request `transition` ("configure", "activate", ...); fails the test unless it ends as `expect`s."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(label=transition))
        for _ in range(5):
            response = self._call(ChangeState, f"{node_name}/change_state", request, process, STARTUP_TIMEOUT)
            if response is not None:
                break
            if self.state(node_name, process) == self.STATE_AFTER[transition]:  # the reply was lost, not the request
                return True
        else:
            pytest.fail(f"no answer from {node_name}/change_state ({transition}):\n{process.log()}")
        if response.success != expect:
            pytest.fail(f"{node_name}: {transition} {'failed' if expect else 'succeeded'}:\n{process.log()}")
        return response.success


@contextmanager
def lifecycle_client(home: Path):
    """A LifecycleClient in this process, in its own rclpy context (spun while it waits for answers)."""
    activate(home)
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"lisa_test_lifecycle_{os.getpid()}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield LifecycleClient(node, executor)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def wait_until(condition, node: "NodeProcess", timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if not node.alive():
            pytest.fail(f"lisa_node exited with code {node.process.returncode} while {what}:\n{node.log()}")
        if time.monotonic() > deadline:
            pytest.fail(f"lisa_node: not {what} within {timeout} s:\n{node.log()}")
        time.sleep(0.1)


class NodeProcess:
    def __init__(self, process, log_path):
        self.process, self.log_path = process, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT (Ctrl-C), then SIGKILL after `timeout` seconds; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the node and nothing else
                self.process.wait(10)
        return self.process.returncode
