"""A noisy waypoint controller over the maze graph, the way D4RL collected maze2d and antmaze data.

The maze map (1 = wall, anything else = free cell) is a grid graph. Breadth-first search from the
goal cell gives every free cell its distance to the goal; from the agent's current cell the next
waypoint is the centre of a neighbouring cell one step closer, and once the agent is in the goal
cell (or the next cell is the goal cell) the waypoint is the goal position itself. Reading the
next cell afresh at every step keeps the plan valid when noise pushes the agent off its path, and
a new goal (a continuing task with `reset_target=True`) simply gets its own distance field.

PointMaze: a PD controller on the (x, y) position and velocity drives the ball to the waypoint,
`action = P * (waypoint - position) - D * velocity` with D4RL's gains P = 10, D = 1, plus Gaussian
action noise, clipped to the action space.

AntMaze: the waypoints become (x, y) sub-goals for a low-level walking policy,
`low_level(obs, target_xy) -> action`, as D4RL drove a goal-reaching ant policy to the next cell.
No walking policy ships with this module yet: pass one, for example a goal-conditioned SAC
trained with this suite on `antmaze:` and wrapped by `goal_agent_low_level(agent)`.

Data-collection styles (`episode_cells`; each episode's cells go to `env.reset(options=...)`):

  "diverse"     a random goal cell and a random start cell (another free cell) every episode:
                D4RL's "diverse" datasets, which cover the whole maze.
  "fixed-goal"  one goal cell for the whole dataset (by default the free cell farthest along the
                maze from the first free cell, e.g. the far end of the U), a random start cell
                every episode. Pinning `start_cell` as well gives D4RL's UMaze datasets (one
                start, one goal). D4RL's "play" datasets (a few hand-picked goals) are not built in.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import numpy as np

Cell = tuple[int, int]
LowLevelPolicy = Callable[[dict, np.ndarray], np.ndarray]

STYLES = ("diverse", "fixed-goal")
DEFAULT_NOISE = 0.5  # D4RL's "noisy" maze2d datasets add N(0, 0.5^2) to the PD action
P_GAIN = 10.0
D_GAIN = 1.0


# ---------------------------------------------------------------------------------- maze graph


def maze_of(env) -> Any:
    """The gymnasium-robotics `Maze` (map, scaling, cell <-> xy) under any wrappers."""
    maze = getattr(env.unwrapped, "maze", None)
    if maze is None:
        raise TypeError(f"{env.unwrapped} is not a gymnasium-robotics maze (PointMaze or AntMaze)")
    return maze


def is_ant_maze(env) -> bool:
    return hasattr(env.unwrapped, "ant_env")


def free_cells(maze_map) -> list[Cell]:
    """Every non-wall cell, in row-major order."""
    return [(i, j) for i, row in enumerate(maze_map) for j, cell in enumerate(row) if cell != 1]


def neighbours(maze_map, cell: Cell) -> list[Cell]:
    i, j = cell
    candidates = [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)]
    return [(a, b) for a, b in candidates
            if 0 <= a < len(maze_map) and 0 <= b < len(maze_map[0]) and maze_map[a][b] != 1]


def distances_from(maze_map, source: Cell) -> dict[Cell, int]:
    """Breadth-first search: steps from `source` to every free cell it connects to."""
    distance = {source: 0}
    frontier = deque([source])
    while frontier:
        cell = frontier.popleft()
        for nxt in neighbours(maze_map, cell):
            if nxt not in distance:
                distance[nxt] = distance[cell] + 1
                frontier.append(nxt)
    return distance


def shortest_path(maze_map, start: Cell, goal: Cell) -> list[Cell]:
    """Cells from start to goal inclusive, along a shortest route."""
    to_goal = distances_from(maze_map, goal)
    if start not in to_goal:
        raise ValueError(f"no path from cell {start} to cell {goal}")
    path = [start]
    while path[-1] != goal:
        path.append(min(neighbours(maze_map, path[-1]), key=lambda c: to_goal.get(c, np.inf)))
    return path


# ---------------------------------------------------------------------------------- styles


def default_goal_cell(maze_map) -> Cell:
    """The free cell farthest along the maze from the first free cell (ties: the last found)."""
    distance = distances_from(maze_map, free_cells(maze_map)[0])
    farthest = max(distance.values())
    return [cell for cell, d in distance.items() if d == farthest][-1]


def episode_cells(maze_map, style: str, rng: np.random.Generator, *,
                  goal_cell: Cell | None = None, start_cell: Cell | None = None) -> dict[str, Cell]:
    """Reset options {"goal_cell", "reset_cell"} for one episode of a style (module docstring).

    An explicit `goal_cell` / `start_cell` pins that cell in every style. The start cell is never
    the goal cell, so every episode has somewhere to go."""
    if style not in STYLES:
        raise ValueError(f"unknown collection style {style!r}; styles: {', '.join(STYLES)}")
    cells = free_cells(maze_map)
    if goal_cell is None:
        if style == "fixed-goal":
            goal_cell = default_goal_cell(maze_map)
        else:  # a pinned start is never drawn as the goal
            goal_cell = _pick([c for c in cells if start_cell is None or c != tuple(start_cell)], rng)
    if start_cell is None:
        start_cell = _pick([c for c in cells if c != tuple(goal_cell)], rng)
    for name, cell in (("goal_cell", goal_cell), ("start_cell", start_cell)):
        if tuple(cell) not in cells:
            raise ValueError(f"{name} {tuple(cell)} is a wall or outside the maze; free cells: {cells}")
    if tuple(start_cell) == tuple(goal_cell):
        raise ValueError(f"start_cell {tuple(start_cell)} is the goal cell: an episode needs somewhere to go")
    return {"goal_cell": tuple(int(v) for v in goal_cell), "reset_cell": tuple(int(v) for v in start_cell)}


def _pick(cells: list[Cell], rng: np.random.Generator) -> Cell:
    return cells[int(rng.integers(len(cells)))]


# ---------------------------------------------------------------------------------- planner


class MazePlanner:
    """Noisy waypoint controller for one maze env; `act(obs) -> action` for single observations.

    obs is the goal dict {"observation", "achieved_goal", "desired_goal"} of `crl.envs.make`
    (or gymnasium-robotics itself). `noise` is the standard deviation of Gaussian noise added to
    every action before clipping; `seed` seeds it (`reset(seed)` reseeds between episodes).
    """

    def __init__(self, env, noise: float = DEFAULT_NOISE, seed: int | None = None,
                 low_level: LowLevelPolicy | None = None):
        self.maze = maze_of(env)
        self.maze_map = self.maze.maze_map
        self.free = set(free_cells(self.maze_map))
        self.ant = is_ant_maze(env)
        if self.ant and low_level is None:
            raise ValueError(
                "AntMaze needs a low-level walking policy: MazePlanner(env, low_level=fn) with "
                "fn(obs, target_xy) -> action, e.g. goal_agent_low_level(agent) around a "
                "goal-conditioned agent trained to walk to nearby goals (e.g. `crl train gcrl --env "
                "antmaze:AntMaze_Open-v5`). None is provided with the suite yet.")
        self.low_level = low_level
        self.noise = float(noise)
        low, high = env.action_space.low, env.action_space.high
        self.action_low, self.action_high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self.rng = np.random.default_rng(seed)
        self._goal_cell: Cell | None = None
        self._to_goal: dict[Cell, int] = {}

    def reset(self, seed: int | None = None) -> None:
        """Forgets the plan; reseeds the noise when a seed is given."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._goal_cell, self._to_goal = None, {}

    def act(self, obs: dict) -> np.ndarray:
        position = np.asarray(obs["achieved_goal"], np.float64)
        target = self.waypoint(position, np.asarray(obs["desired_goal"], np.float64))
        if self.ant:
            action = np.asarray(self.low_level(obs, target.astype(np.float32)), np.float64)
        else:
            velocity = np.asarray(obs["observation"][2:4], np.float64)
            action = P_GAIN * (target - position) - D_GAIN * velocity
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, self.action_low, self.action_high).astype(np.float32)

    def waypoint(self, position: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The (x, y) to head for now: the next cell's centre, or the goal near the end."""
        goal_cell = self.cell_of(goal)
        if goal_cell != self._goal_cell:  # a new goal: replan
            self._goal_cell, self._to_goal = goal_cell, distances_from(self.maze_map, goal_cell)
        cell = self.cell_of(position)
        if cell == goal_cell or cell not in self._to_goal:
            return goal
        next_cell = min(neighbours(self.maze_map, cell), key=lambda c: self._to_goal.get(c, np.inf))
        return goal if next_cell == goal_cell else self.cell_centre(next_cell)

    def path(self, position: np.ndarray, goal: np.ndarray) -> list[np.ndarray]:
        """All waypoints from here to the goal (for plotting and tests): cell centres, then goal."""
        cells = shortest_path(self.maze_map, self.cell_of(position), self.cell_of(goal))
        return [self.cell_centre(c) for c in cells[1:-1]] + [np.asarray(goal, np.float64)]

    def cell_of(self, xy: np.ndarray) -> Cell:
        """The free cell under (x, y); a point on a wall's edge snaps to the nearest free centre."""
        cell = tuple(int(v) for v in self.maze.cell_xy_to_rowcol(xy))
        if cell in self.free:
            return cell
        return min(self.free, key=lambda c: float(np.linalg.norm(self.cell_centre(c) - xy)))

    def cell_centre(self, cell: Cell) -> np.ndarray:
        return np.asarray(self.maze.cell_rowcol_to_xy(np.asarray(cell)), np.float64)


def goal_agent_low_level(agent) -> LowLevelPolicy:
    """Wraps a goal-conditioned agent (dict observations) as a walking policy: the sub-goal
    replaces `desired_goal`, and the agent acts deterministically."""

    def low_level(obs: dict, target_xy: np.ndarray) -> np.ndarray:
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}
        batch["desired_goal"] = np.asarray(target_xy, np.float32)[None]
        return agent.act(batch, explore=False)[0]

    return low_level
