"""The intents: kinds of command that need world knowledge about the objects, as data.

Each intent is a table entry: its key, its "train" and disjoint "heldout" phrasings, a rule
that picks the one object answering it in a scene (`OnlyOne`, `Extreme`), and an
explanation template. `Intent.target` and `Intent.explain` interpret them. A command is
asked in a scene only when exactly one of its objects satisfies the rule.

Explanation templates are `str.format` strings (or one per target category) over the
fields of `TEMPLATE_FIELDS`: category, height_cm, vitamin_c, other_foods.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Formatter

from .catalogue import CATEGORIES


def vitamin_c(obj) -> float | None:
    """mg per 100 g of a food object; None for what is not food."""
    category = CATEGORIES[obj.category]
    return category.vitamin_c if category.food else None


# What `Extreme` rules compare, by name: a number for an object, or None when it has none.
MEASURES = {
    "vitamin_c": vitamin_c,
    "height": lambda obj: obj.height,
}

# The fields explanation templates may use: (target object, all objects) -> value (None: undefined).
TEMPLATE_FIELDS = {
    "category": lambda obj, objects: obj.category,
    "height_cm": lambda obj, objects: round(obj.height * 100),
    "vitamin_c": lambda obj, objects: vitamin_c(obj),
    "other_foods": lambda obj, objects: " and the ".join(
        other.category for other in objects if vitamin_c(other) is not None and other.index != obj.index
    ),
}


@dataclass(frozen=True)
class OnlyOne:
    """Rule: the one object of one of `categories`, or the one whose category has `attribute` set."""

    categories: frozenset[str] = frozenset()
    attribute: str | None = None  # a bool field of Category, e.g. "round"

    def matches(self, obj) -> bool:
        if self.attribute is not None:
            return bool(getattr(CATEGORIES[obj.category], self.attribute))
        return obj.category in self.categories


@dataclass(frozen=True)
class Extreme:
    """Rule: the object maximising sign * MEASURES[measure] among those that have the measure.

    None when fewer than `min_count` objects have it, or when the best leads the second by
    `margin` or less (no clear answer).
    """

    measure: str
    sign: int = 1
    min_count: int = 2
    margin: float = 0.0


@dataclass(frozen=True)
class Intent:
    """A kind of command: phrasings, the rule picking its target, and the explanation template."""

    key: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    rule: OnlyOne | Extreme
    explanation: str | dict[str, str]  # a template, or one per target category

    def target(self, objects) -> int | None:
        """Index of the one object (SceneObjects of a scene) answering the intent, or None."""
        if isinstance(self.rule, OnlyOne):
            hits = [obj.index for obj in objects if self.rule.matches(obj)]
            return hits[0] if len(hits) == 1 else None
        measure = MEASURES[self.rule.measure]
        scored = [(self.rule.sign * measure(obj), obj.index) for obj in objects if measure(obj) is not None]
        if len(scored) < self.rule.min_count:
            return None
        scored.sort(reverse=True)
        if len(scored) > 1 and scored[0][0] - scored[1][0] <= self.rule.margin:
            return None
        return scored[0][1]

    def explain(self, target, objects) -> str | None:
        """Why `target` answers the intent among `objects`; None when the template is undefined for
        it (no template for its category, or a field without a value, e.g. a non-food's vitamin C)."""
        template = self.explanation if isinstance(self.explanation, str) else self.explanation.get(target.category)
        if template is None:
            return None
        names = {name for _, name, _, _ in Formatter().parse(template) if name}
        values = {name: TEMPLATE_FIELDS[name](target, objects) for name in names}
        if any(value is None for value in values.values()):
            return None
        return template.format(**values)


def _only(*categories: str) -> OnlyOne:
    return OnlyOne(categories=frozenset(categories))


INTENTS: dict[str, Intent] = {
    intent.key: intent
    for intent in [
        Intent(
            "cut_paper",
            ("something to cut paper with", "I need to cut this sheet of paper.",
             "What could I use to cut a piece of paper?", "Give me a tool for cutting paper.",
             "Which object can cut a paper strip?"),
            ("Hand me something that can cut paper.", "what would cut a sheet of paper?"),
            _only("scissors", "knife"),
            {"scissors": "The scissors have sharp blades for cutting paper.",
             "knife": "The knife has a sharp blade that can cut paper."},
        ),
        Intent(
            "most_vitamin_c",
            ("the food with the most vitamin C", "Which food here has the most vitamin C?",
             "I have a cold; which fruit has the most vitamin C?", "the fruit richest in vitamin C",
             "Pick the food that gives the most vitamin C."),
            ("Which fruit gives the most vitamin C?", "the food here richest in vitamin C"),
            Extreme("vitamin_c", 1),
            "The {category} has the most vitamin C of the food here, about {vitamin_c:g} mg per 100 g, "
            "more than the {other_foods}.",
        ),
        Intent(
            "least_vitamin_c",
            ("the food with the least vitamin C", "Which fruit has the least vitamin C?",
             "the fruit poorest in vitamin C", "Which food here gives the least vitamin C?"),
            ("Pick the fruit with the least vitamin C.", "the food poorest in vitamin C"),
            Extreme("vitamin_c", -1),
            "The {category} has the least vitamin C of the food here, about {vitamin_c:g} mg per 100 g, "
            "less than the {other_foods}.",
        ),
        Intent(
            "rolls",
            ("what would roll off the table?", "Which object would roll away if the table were tilted?",
             "the thing that could roll off the edge", "Which item is round enough to roll?"),
            ("If I bump the table, what might roll off the edge?", "the round thing that would roll away"),
            OnlyOne(attribute="round"),
            "The {category} is round, so it would roll off a tilted table.",
        ),
        Intent(
            "food_scraps",
            ("where should the food scraps go?", "Where do I throw away the peel?", "the place for kitchen waste",
             "Where can I put the leftovers I don't want?"),
            ("Where do the food scraps and the peel go?", "the place to throw away kitchen waste"),
            _only("compost bin"),
            "The compost bin is where food scraps and peels belong.",
        ),
        Intent(
            "hot_drink",
            ("something to drink hot coffee from", "What should I pour my tea into?", "the object for a hot drink",
             "I want a hot chocolate; what do I drink it from?"),
            ("Where can I pour hot coffee?", "what can I drink tea from?"),
            _only("mug"),
            "The mug has a handle, so it can hold a hot drink without burning the hand.",
        ),
        Intent(
            "soup",
            ("something to eat soup from", "What should I pour cereal and milk into?", "the dish for serving soup",
             "Where can I put a salad to eat it?"),
            ("What dish can I eat cereal from?", "something to serve a salad in"),
            _only("bowl"),
            "The bowl is a deep dish for soup, cereal or salad.",
        ),
        Intent(
            "carry_water",
            ("something to carry water on a hike", "What can I take water with me in?",
             "the container for taking a drink outside", "I'm going for a run; what holds my water?"),
            ("What holds water for a hike?", "the container to carry water on a run"),
            _only("bottle"),
            "The bottle holds water and can be closed with its cap.",
        ),
        Intent(
            "clean_spill",
            ("something to wipe up a spill", "What should I use to wash the dishes?", "the soft object for cleaning",
             "I spilled juice; what can soak it up?"),
            ("Hand me something soft to wipe the table.", "What can soak up a spill?"),
            _only("sponge"),
            "The sponge is soft and absorbs liquid, so it is good for cleaning.",
        ),
        Intent(
            "nail",
            ("something to drive a nail into the wall", "What tool would hang a picture frame with a nail?",
             "the tool for hammering", "I need to knock a nail in."),
            ("the tool that drives nails", "What could I use to knock a nail into the wall?"),
            _only("hammer"),
            "The hammer has a heavy metal head for driving nails.",
        ),
        Intent(
            "read",
            ("something to read", "What could I read before bed?", "the object with pages and a story",
             "I'm bored; what can I read?"),
            ("Give me something with a story to read.", "the thing with pages I could read"),
            _only("book"),
            "The book has pages to read.",
        ),
        Intent(
            "call",
            ("something to call my mother with", "What can I use to make a phone call?",
             "the device for sending a text message", "I need to call a taxi."),
            ("What could I use to call a friend?", "the device to send a message"),
            _only("phone"),
            "The phone can make calls and send messages.",
        ),
        Intent(
            "water_plant",
            ("what needs watering?", "Which thing on the table is alive?", "the object that grows in sunlight",
             "Which item would wilt without water?"),
            ("Which thing would wilt without watering?", "the object that is alive and grows"),
            _only("plant"),
            "The plant is alive and needs water to grow.",
        ),
        Intent(
            "fetch",
            ("something to play fetch with the dog", "What could I throw to a child to catch?",
             "the toy for playing catch", "What can I kick or bounce?"),
            ("What could I throw for the dog to fetch?", "something to kick and bounce"),
            _only("ball"),
            "The ball is light and round, good for throwing and catching.",
        ),
        Intent(
            "sour",
            ("the sourest fruit", "What fruit would I squeeze on fish?", "the fruit to make lemonade",
             "Which fruit is very sour?"),
            ("Which fruit would I squeeze to make lemonade?", "the very sour fruit"),
            _only("lemon"),
            "The lemon is a very sour citrus fruit.",
        ),
        Intent(
            "potassium",
            ("the fruit rich in potassium", "Which fruit do monkeys love?",
             "the fruit you peel that is long and curved", "What could I slice onto my cereal for potassium?"),
            ("the long curved fruit", "Which fruit gives potassium?"),
            _only("banana"),
            "The banana is a long fruit rich in potassium.",
        ),
        Intent(
            "tallest",
            ("the tallest object on the table", "Which item stands highest?", "the highest thing on the table",
             "Which object is the tallest?"),
            ("the highest object", "Which thing on the table is the tallest?"),
            Extreme("height", 1, min_count=2, margin=0.02),
            "The {category} is the tallest object on the table, about {height_cm} cm high.",
        ),
    ]
}
