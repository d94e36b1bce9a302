"""The simulated world: every embodiment loads and renders, joints move, the task predicate."""

from __future__ import annotations

import numpy as np
import pytest

# Import the world before anything else imports mujoco: it selects the offscreen GL backend.
pytest.importorskip("vla_runtime.sim.world", reason="needs mujoco")

from vla_runtime.sim.pacing import RealTimePacer
from vla_runtime.sim.scenes import SCENES, TARGET_OBJECT, scene_layout
from vla_runtime.sim.world import World, WorldConfig, build_world

WIDTH, HEIGHT = 160, 120


@pytest.fixture(scope="module", params=sorted(SCENES))
def world(request: pytest.FixtureRequest) -> World:
    built = build_world(WorldConfig(request.param, WIDTH, HEIGHT))
    yield built
    built.close()


def test_every_named_camera_renders_a_non_blank_image(world: World) -> None:
    world.reset()
    assert world.camera_names
    for camera in world.camera_names:
        image = world.render(camera)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        assert image.std() > 5.0, f"{camera} is blank"


def test_the_start_pose_holds_without_self_contact_drift(world: World) -> None:
    world.reset()
    start = world.joint_positions()
    world.step(250)
    np.testing.assert_allclose(world.joint_positions(), start, atol=2e-3)
    assert not world.task_state().success


def test_a_commanded_joint_move_changes_joints_and_images(world: World) -> None:
    world.reset()
    fixed = scene_layout(world.config.embodiment).fixed_cameras[0].name
    before = world.render(fixed).astype(np.int16)
    target = world.joint_positions()
    target[0] += 0.4  # the base joint of the (first) arm
    world.set_joint_targets(target)
    world.step(500)  # 1 s
    assert abs(world.joint_positions()[0] - target[0]) < 0.02
    after = world.render(fixed).astype(np.int16)
    assert np.mean(np.abs(after - before).sum(axis=2) > 30) > 0.002


def test_touching_the_red_cube_is_success(world: World) -> None:
    world.reset()
    assert not world.task_state().success
    tcp = world.tcp_positions()[0]
    world.place_object(TARGET_OBJECT, tcp)
    state = world.task_state()
    assert state.success and state.target_distance_m == 0.0
    np.testing.assert_allclose(state.objects[TARGET_OBJECT].position, tcp)
    assert set(state.objects) == {o.name for o in scene_layout(world.config.embodiment).objects}


def test_targets_are_clamped_and_checked(world: World) -> None:
    world.reset()
    world.set_joint_targets(np.full(len(world.joint_names), 100.0))
    assert np.all(world.joint_targets() < 100.0)
    with pytest.raises(ValueError, match="finite joint values"):
        world.set_joint_targets(np.zeros(len(world.joint_names) + 1))


def test_unknown_embodiment_and_camera_name_the_known_ones(world: World) -> None:
    with pytest.raises(KeyError, match="did you mean 'so100'"):
        scene_layout("so101")
    with pytest.raises(KeyError, match="cameras:"):
        world.render("nope")


def test_real_time_pacing_steps_what_wall_time_asks_and_counts_falling_behind() -> None:
    pacer = RealTimePacer(timestep_s=0.002, max_catch_up_s=0.1)
    assert pacer.steps_due(1_000_000_000) == 0  # anchors
    assert pacer.steps_due(1_010_000_000) == 5
    assert pacer.steps_due(1_011_000_000) == 0  # half a step: not yet
    assert pacer.steps_due(1_012_000_000) == 1
    assert pacer.behind_count == 0
    assert pacer.steps_due(2_012_000_000) == 50  # a 1 s stall: steps 0.1 s, drops 0.9 s
    assert pacer.behind_count == 1 and pacer.dropped_s == pytest.approx(0.9)
    assert pacer.steps_due(2_014_000_000) == 1  # and keeps real time from there


def test_world_advance_reports_falling_behind() -> None:
    world = build_world(WorldConfig("so100", WIDTH, HEIGHT, max_catch_up_s=0.05))
    world.advance(0)
    assert world.advance(20_000_000) == 10
    assert world.behind_real_time_count == 0
    world.advance(1_020_000_000)
    assert world.behind_real_time_count == 1 and world.lag_s == pytest.approx(0.95)
    assert world.time_s == pytest.approx(0.07)


def test_a_driver_closes_the_loop_through_the_servo_bus_emulator() -> None:
    from vla_runtime.drivers.emulators.servo_bus import ServoBusEmulator
    from vla_runtime.drivers.so100.driver import build
    from vla_runtime.sim.coupling import ServoBusCoupling

    world = build_world(WorldConfig("so100", WIDTH, HEIGHT))
    ids = [1, 2, 3, 4, 5, 6]
    with ServoBusEmulator(ids, physics_rate_hz=None) as bus:
        coupling = ServoBusCoupling(bus, ids)
        coupling.report(world)
        driver = build(world.joint_names, {"port": bus.port, "ids": ids})
        driver.connect()
        try:
            np.testing.assert_allclose(driver.read().positions, 0.0, atol=2e-3)
            before = world.render("third_person").astype(np.int16)
            driver.enable()
            target = np.array([0.5, -0.3, 0.2, 0.0, 0.0, 0.3])
            driver.write(target)
            for _ in range(100):  # 1 s of world time in 10 ms chunks
                coupling.command(world)
                world.step(5)
                coupling.report(world)
            np.testing.assert_allclose(world.joint_positions(), target, atol=0.02)
            np.testing.assert_allclose(driver.read().positions, target, atol=0.02)
            after = world.render("third_person").astype(np.int16)
            assert np.mean(np.abs(after - before).sum(axis=2) > 30) > 0.005
        finally:
            driver.disconnect()
            world.close()


def test_mimic_fingers_follow_their_leader() -> None:
    world = build_world(WorldConfig("franka", WIDTH, HEIGHT))
    target = world.joint_positions()
    target[-1] = 0.03  # fr3_finger_joint1 [m]
    world.set_joint_targets(target)
    world.step(500)
    mirror = world.model.joint("fr3_finger_joint2").qposadr[0]
    assert world.joint_positions()[-1] == pytest.approx(0.03, abs=2e-3)
    assert world.data.qpos[mirror] == pytest.approx(world.joint_positions()[-1], abs=2e-3)
    world.close()


def test_camera_intrinsics_follow_the_mujoco_fovy_and_render_size(world: World) -> None:
    import math

    for camera in world.camera_names:
        fx, fy, cx, cy = world.camera_intrinsics(camera)
        fovy = math.radians(float(world.model.cam_fovy[world.model.camera(camera).id]))
        assert fy == pytest.approx(HEIGHT / (2 * math.tan(fovy / 2)))
        assert (fx, cx, cy) == pytest.approx((fy, WIDTH / 2, HEIGHT / 2))
    with pytest.raises(KeyError, match="no camera 'nope'"):
        world.camera_intrinsics("nope")


def test_damiao_coupling_servos_on_mit_targets_and_reports_the_world() -> None:
    """MIT frames in (as a driver sends them), world joints move, feedback carries them."""
    from vla_runtime.drivers.emulators.damiao import DamiaoMotorSet
    from vla_runtime.drivers.yam.damiao import (
        MitCommand,
        SpecialCommand,
        decode_feedback,
        encode_mit,
        motor_model,
        special_frame,
    )
    from vla_runtime.sim.coupling import DamiaoCoupling

    world = build_world(WorldConfig("yam_bimanual", 32, 24))
    ids = (1, 2, 3, 4, 5, 6, 7)
    models = ("DM4340",) * 3 + ("DM4310",) * 4
    left = [n for n in world.joint_names if n.startswith("left_")]
    motors = DamiaoMotorSet.from_models(ids, models, internal_physics=False, watchdog_s=60.0)
    coupling = DamiaoCoupling(motors, left, gripper_id=7)
    try:
        world.reset()
        start = world.joint_positions()
        coupling.report(world)
        assert motors.positions()[:6] == pytest.approx(start[:6])
        # Disabled motors hold nothing: the targets follow the joints.
        coupling.command(world)
        np.testing.assert_allclose(world.joint_targets(), start, atol=1e-9)

        answers: list[tuple[int, bytes]] = []

        def reply(arbitration_id: int, data: bytes) -> None:
            answers.append((arbitration_id, data))

        goal = start[:7].copy()
        goal[0] += 0.3
        goal[6] = 0.02  # gripper [m] → motor angle
        motor_goal = coupling.to_motors(goal)
        assert motor_goal[6] == pytest.approx(6.57 * 0.02 / 0.04695)
        for k, motor_id in enumerate(ids):
            motors.handle_frame(motor_id, special_frame(SpecialCommand.ENABLE), reply)
            command = MitCommand(float(motor_goal[k]), kp=50.0, kd=2.0)
            motors.handle_frame(motor_id, encode_mit(command, motor_model(models[k])), reply)
        for _ in range(200):  # 0.4 s of world time
            coupling.command(world)
            world.step(1)
            coupling.report(world)
        positions = world.joint_positions()
        np.testing.assert_allclose(positions[:7], goal, atol=0.01)
        np.testing.assert_allclose(positions[7:], start[7:], atol=0.01)  # right arm untouched
        answers.clear()
        motors.handle_frame(
            1, encode_mit(MitCommand(float(motor_goal[0]), kp=50.0), motor_model("DM4340")), reply
        )
        feedback = decode_feedback(answers[-1][1], motor_model("DM4340"))
        assert feedback.position_rad == pytest.approx(positions[0], abs=1e-3)
    finally:
        motors.close()
        world.close()


def test_franka_coupling_tracks_the_stand_ins_targets_and_reports_the_world() -> None:
    from vla_runtime.sim.coupling import FrankaCoupling

    class Arm:
        def __init__(self, targets: np.ndarray) -> None:
            self.attached = False
            self._targets = targets
            self.reported: tuple[np.ndarray, np.ndarray | None] | None = None

        def attach_world(self) -> None:
            self.attached = True

        def targets(self) -> np.ndarray:
            return self._targets.copy()

        def set_positions(
            self, positions: np.ndarray, velocities: np.ndarray | None = None
        ) -> None:
            self.reported = (positions, velocities)

    world = build_world(WorldConfig("franka", 32, 24))
    try:
        world.reset()
        goal = world.joint_positions()
        goal[0] += 0.2
        arm = Arm(goal)
        coupling = FrankaCoupling(arm)
        assert arm.attached
        for _ in range(300):
            coupling.command(world)
            world.step(1)
            coupling.report(world)
        np.testing.assert_allclose(world.joint_positions(), goal, atol=0.01)
        assert arm.reported is not None
        np.testing.assert_allclose(arm.reported[0], world.joint_positions())
    finally:
        world.close()
