"""The braking task: a car on a road must stop before obstacles, and sees its own brake light.

The causal state is the true distance `d` to the next obstacle; the car senses it with Gaussian noise. The
nuisance is the brake light, which shows the previous action. The scripted expert brakes exactly when
`d <= safe_dist`, so in its demonstrations consecutive actions agree almost always and the light predicts
the expert's action better than the noisy distance does: a behaviour-cloned policy that sees the light learns
to copy its own last action, and in closed loop it fails to start braking (de Haan et al. 2019, "Causal
Confusion in Imitation Learning", whose driving example is this brake-light indicator).

Dynamics of one step: `go` (action 0) moves one unit closer and earns 1; reaching the obstacle (`d = 0`) is
a crash, which costs `crash_cost`, and the car is towed past it. `brake` (action 1) earns 0; while the car
waits, the obstacle stays with probability `persistence` per step and otherwise clears. A new obstacle
appears uniformly between `safe_dist + 1` and `max_dist` ahead. Episodes last `horizon` steps; a crash does
not end one, so a confused policy's rollouts keep visiting the states where it fails (which DAgger labels).
`persistence` sets how long the expert keeps braking, i.e. how strongly its consecutive actions correlate.

The defaults (sensor noise 3, crash cost 50) were tuned on seeds 0-3 so that the acceptance margins are wide:
with noise 2 the confused policy crashed only 0.2 to 0.3 times per episode and its return was within 7% of
masked cloning's; with noise 3 it crashes 1.4 to 13 times.

`Road` is vectorised over episodes (numpy) and shared by the Gymnasium environment `BrakingEnv`
(`gymnasium.make("testbed/Braking-v0")`) and by the batched rollouts that make demonstrations and score
policies. Every step draws the same random numbers whatever the actions, so with one seed different
policies meet the same noise and obstacles (common random numbers), and a batch of one episode follows
`BrakingEnv` exactly.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np

from testbed.errors import ConfigError, check_positive, check_unit

GO, BRAKE = 0, 1
Observation = Literal["vector", "image"]
Policy = Callable[[np.ndarray], np.ndarray]  # observations (n, *shape) -> actions (n,)


class Trajectories(NamedTuple):
    """What a batch of episodes saw, `(episodes, horizon)` arrays, and each episode's outcome."""

    reading: np.ndarray  # sensed distance in each visited state
    light: np.ndarray  # brake light (the previous action) in each visited state
    expert: np.ndarray  # the expert's action in each visited state: the label
    returns: np.ndarray  # per episode
    crashes: np.ndarray  # per episode


@dataclass(frozen=True)
class Road:
    """The task's knobs and its vectorised dynamics.

    Args:
        max_dist: farthest an obstacle appears.
        safe_dist: the expert brakes when the obstacle is this close or closer.
        persistence: probability that an obstacle the car waits for is still there the next step.
        noise: standard deviation of the distance sensor.
        saliency: brightness of the brake light in the observation (0 hides it).
        crash_cost: penalty of a crash.
        horizon: steps per episode.
        observation: `vector` (sensed distance / max_dist, light) or `image` (1 x size x size: the obstacle as
            a bar whose row is the sensed distance, the light as a corner patch).
        image_size: side of the image observation.
    """

    max_dist: int = 25
    safe_dist: int = 4
    persistence: float = 0.9
    noise: float = 3.0
    saliency: float = 1.0
    crash_cost: float = 50.0
    horizon: int = 200
    observation: Observation = "vector"
    image_size: int = 16

    def __post_init__(self) -> None:
        check_positive("safe_dist", self.safe_dist)
        if self.max_dist <= self.safe_dist:
            raise ConfigError(f"max_dist: {self.max_dist} must be larger than safe_dist ({self.safe_dist})")
        check_unit("persistence", self.persistence)
        for name in ("noise", "saliency", "crash_cost"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: {getattr(self, name)} is not allowed; it must be >= 0")
        check_positive("horizon", self.horizon)
        if self.observation not in ("vector", "image"):
            raise ConfigError(f"observation: {self.observation!r} is not allowed; choose one of vector, image")
        if self.image_size < 4:
            raise ConfigError(f"image_size: {self.image_size} is not allowed; it must be >= 4")

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (2,) if self.observation == "vector" else (1, self.image_size, self.image_size)

    def expert(self, d: np.ndarray) -> np.ndarray:
        """The scripted expert: it uses only the true distance."""
        return (d <= self.safe_dist).astype(np.int64)

    def obstacles(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.safe_dist + 1, self.max_dist + 1, n)

    def sense(self, d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The distance sensor: Gaussian noise, and a range of 0 to twice `max_dist`."""
        return np.clip(d + self.noise * rng.standard_normal(len(d)), 0, 2 * self.max_dist)

    def render(self, reading: np.ndarray, light: np.ndarray) -> np.ndarray:
        """Observations from the sensed distances and the brake lights (float32, `(n, *obs_shape)`)."""
        reading, light = np.asarray(reading, dtype=np.float32), np.asarray(light, dtype=np.float32)
        if self.observation == "vector":
            return np.stack([reading / self.max_dist, self.saliency * light], 1).astype(np.float32)
        n, size = len(reading), self.image_size
        img = np.zeros((n, 1, size, size), dtype=np.float32)
        # The bar's row is linear in the sensed distance (row 0 is the horizon); between two rows it is
        # split over both, so the image carries the reading without rounding it.
        row = np.clip(reading / self.max_dist, 0, 1) * (size - 2) + 1
        low = np.floor(row).astype(np.int64)
        frac = (row - low).astype(np.float32)
        cols = slice(size // 4, size - size // 4)
        img[np.arange(n), 0, low, cols] = (1 - frac)[:, None]
        img[np.arange(n), 0, np.minimum(low + 1, size - 1), cols] += frac[:, None]
        img[:, 0, size - 3:, :3] = (self.saliency * light)[:, None, None]
        return img

    def step(self, d: np.ndarray, action: np.ndarray, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Next distances, rewards and crashes. Draws the same numbers whatever the actions."""
        clears = rng.random(len(d)) >= self.persistence
        fresh = self.obstacles(len(d), rng)
        go = action == GO
        d = np.where(go, d - 1, d)
        crashed = d <= 0
        d = np.where((~go & clears) | crashed, fresh, d)
        reward = go.astype(np.float64) - self.crash_cost * crashed
        return d, reward, crashed

    def rollout(self, policy: Policy | None, episodes: int, seed: int) -> Trajectories:
        """Drive `episodes` episodes in parallel under `policy` (None: the expert) and record every state."""
        rng = np.random.default_rng(seed)
        d = self.obstacles(episodes, rng)
        reading, light = self.sense(d, rng), np.zeros(episodes, dtype=np.int64)
        returns, crashes, visited = np.zeros(episodes), np.zeros(episodes), []
        for _ in range(self.horizon):
            expert = self.expert(d)
            action = expert if policy is None else np.asarray(policy(self.render(reading, light)), dtype=np.int64)
            visited.append((reading, light, expert))
            d, reward, crashed = self.step(d, action, rng)
            returns, crashes = returns + reward, crashes + crashed
            reading, light = self.sense(d, rng), action
        return Trajectories(*(np.stack(col, 1) for col in zip(*visited)), returns, crashes)

    def expert_agreement(self) -> float:
        """P(the expert's action equals its previous one, i.e. the light): the demonstrations' spurious
        correlation, from a fixed long simulation."""
        return _agreement(self)

    def expert_return(self, episodes: int, seed: int) -> float:
        """The expert's mean return on these episodes, which closed-loop returns are normalised by. Cached:
        evaluation drives the same episodes every time."""
        return _expert_return(self, episodes, seed)


@cache
def _agreement(road: Road) -> float:
    t = road.rollout(None, episodes=256, seed=12345)
    return float((t.light == t.expert).mean())


@cache
def _expert_return(road: Road, episodes: int, seed: int) -> float:
    return float(road.rollout(None, episodes, seed).returns.mean())


class BrakingEnv(gym.Env):
    """The braking task as a Gymnasium environment (one episode). Actions: 0 go, 1 brake. The expert's action
    for the current state is in `info["expert_action"]`, so DAgger-style labelling needs no access to the state."""

    metadata = {"render_modes": []}

    def __init__(self, **knobs: Any) -> None:
        self.road = Road(**knobs)
        self.action_space = gym.spaces.Discrete(2)
        high = max(2.0 if self.road.observation == "vector" else 1.0, self.road.saliency)
        self.observation_space = gym.spaces.Box(0.0, high, self.road.obs_shape, dtype=np.float32)
        self.d = np.zeros(1, dtype=np.int64)
        self.t = 0

    def _observe(self, light: int) -> tuple[np.ndarray, dict[str, Any]]:
        reading = self.road.sense(self.d, self.np_random)
        obs = self.road.render(reading, np.array([light]))[0]
        return obs, {"distance": int(self.d[0]), "expert_action": int(self.road.expert(self.d)[0])}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.d, self.t = self.road.obstacles(1, self.np_random), 0
        return self._observe(GO)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.d, reward, crashed = self.road.step(self.d, np.array([action]), self.np_random)
        self.t += 1
        obs, info = self._observe(int(action))
        info["crashed"] = bool(crashed[0])
        return obs, float(reward[0]), False, self.t >= self.road.horizon, info


gym.register(id="testbed/Braking-v0", entry_point=BrakingEnv)
