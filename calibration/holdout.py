"""A small, fixed, hand-written set of statements from topics the training corpus does not cover.

These statements are never trained on: no relation of :data:`calibration.statements.RELATIONS` talks about
planets, the human body, oceans and mountains, sports or musical instruments. They exist to check how the
shipped probe behaves on an unfamiliar domain: the engine test and ``guard bench quality`` judge the probe on
them, and an unfamiliar domain must get honest verdicts, either covered (right) or reported as uncertain,
never confidently wrong.

Each fact is said four ways, as in the training corpus: the true affirmative, a false one (a plausible wrong
object of the same type), the negation of the false claim (true) and the negation of the true claim (false).
Each topic also has *neither* statements about made-up entities, affirmed and negated. The facts are
kid's-encyclopedia level, so a small model can be expected to know them.
"""

from __future__ import annotations

from calibration.relation import sentence_case
from calibration.statements import Statement

__all__ = ["HOLDOUT_TOPICS", "holdout_statements"]

#: one fact: the affirmative and negated wordings (``{o}`` is the object), the true object and a wrong one
_Fact = tuple[str, str, str, str]

_FACTS: dict[str, tuple[_Fact, ...]] = {
    "planets": (
        ("The largest planet in the solar system is {o}.", "The largest planet in the solar system is not {o}.",
         "Jupiter", "Mars"),
        ("The planet closest to the Sun is {o}.", "The planet closest to the Sun is not {o}.", "Mercury", "Neptune"),
        ("{o} is known as the Red Planet.", "{o} is not known as the Red Planet.", "Mars", "Venus"),
        ("The planet we live on is called {o}.", "The planet we live on is not called {o}.", "Earth", "Saturn"),
        ("{o} is the planet famous for its bright rings.", "{o} is not the planet famous for its bright rings.",
         "Saturn", "Mercury"),
        ("The Earth travels around the {o} once a year.", "The Earth does not travel around the {o} once a year.",
         "Sun", "Moon"),
        ("The Moon travels around the planet {o}.", "The Moon does not travel around the planet {o}.",
         "Earth", "Venus"),
        ("The Sun is a {o}.", "The Sun is not a {o}.", "star", "planet"),
        ("The Earth has exactly {o}.", "The Earth does not have exactly {o}.", "one moon", "two moons"),
        ("The solar system has {o} planets.", "The solar system does not have {o} planets.", "eight", "twelve"),
        ("{o} is the hottest planet in the solar system.", "{o} is not the hottest planet in the solar system.",
         "Venus", "Uranus"),
        ("The planet farthest from the Sun is {o}.", "The planet farthest from the Sun is not {o}.",
         "Neptune", "Mercury"),
    ),
    "human_body": (
        ("The {o} pumps blood around the body.", "The {o} does not pump blood around the body.", "heart", "stomach"),
        ("People breathe air in with their {o}.", "People do not breathe air in with their {o}.",
         "lungs", "kidneys"),
        ("People think with their {o}.", "People do not think with their {o}.", "brain", "liver"),
        ("Each human hand has {o} fingers, counting the thumb.",
         "Each human hand does not have {o} fingers, counting the thumb.", "five", "seven"),
        ("People see with their {o}.", "People do not see with their {o}.", "eyes", "ears"),
        ("People hear sounds with their {o}.", "People do not hear sounds with their {o}.", "ears", "elbows"),
        ("People smell things with their {o}.", "People do not smell things with their {o}.", "noses", "knees"),
        ("The {o} protects the brain.", "The {o} does not protect the brain.", "skull", "kneecap"),
        ("Swallowed food goes down into the {o}.", "Swallowed food does not go down into the {o}.",
         "stomach", "lungs"),
        ("All the bones of the body together form the {o}.", "All the bones of the body together do not form the {o}.",
         "skeleton", "bloodstream"),
        ("A healthy person has {o} lungs.", "A healthy person does not have {o} lungs.", "two", "four"),
        ("People taste food with their {o}.", "People do not taste food with their {o}.", "tongues", "elbows"),
    ),
    "oceans_rivers": (
        ("The largest ocean on Earth is the {o} Ocean.", "The largest ocean on Earth is not the {o} Ocean.",
         "Pacific", "Arctic"),
        ("The highest mountain on Earth is {o}.", "The highest mountain on Earth is not {o}.",
         "Mount Everest", "Mount Fuji"),
        ("The Nile is a famous {o} in Africa.", "The Nile is not a famous {o} in Africa.", "river", "mountain"),
        ("The Sahara is a large {o}.", "The Sahara is not a large {o}.", "desert", "ocean"),
        ("Sea water tastes {o}.", "Sea water does not taste {o}.", "salty", "sweet"),
        ("The Atlantic Ocean separates Europe from {o}.", "The Atlantic Ocean does not separate Europe from {o}.",
         "North America", "Australia"),
        ("The {o} Ocean surrounds the North Pole.", "The {o} Ocean does not surround the North Pole.",
         "Arctic", "Indian"),
        ("Most of Antarctica is covered in {o}.", "Most of Antarctica is not covered in {o}.", "ice", "sand"),
        ("Hot {o} pours out of an erupting volcano.", "Hot {o} does not pour out of an erupting volcano.",
         "lava", "snow"),
        ("Most rivers flow downhill towards the {o}.", "Most rivers do not flow downhill towards the {o}.",
         "sea", "mountains"),
        ("Mount Everest is part of the {o}.", "Mount Everest is not part of the {o}.", "Himalayas", "Alps"),
        ("An island is land surrounded by {o}.", "An island is not land surrounded by {o}.", "water", "sand"),
    ),
    "sports": (
        ("A soccer team has {o} players on the field.", "A soccer team does not have {o} players on the field.",
         "eleven", "fifteen"),
        ("In tennis, players hit the ball with a {o}.", "In tennis, players do not hit the ball with a {o}.",
         "racket", "bat"),
        ("In basketball, players score by throwing the ball through a {o}.",
         "In basketball, players do not score by throwing the ball through a {o}.", "hoop", "wicket"),
        ("A basketball team has {o} players on the court.", "A basketball team does not have {o} players on the court.",
         "five", "eleven"),
        ("In golf, players try to hit the ball into a {o}.", "In golf, players do not try to hit the ball into a {o}.",
         "hole", "basket"),
        ("The Summer Olympic Games are held every {o} years.", "The Summer Olympic Games are not held every {o} years.",
         "four", "ten"),
        ("In volleyball, players hit the ball over a {o}.", "In volleyball, players do not hit the ball over a {o}.",
         "net", "fence"),
        ("Swimming races are held in a {o}.", "Swimming races are not held in a {o}.", "pool", "track"),
        ("A marathon is a long {o} race.", "A marathon is not a long {o} race.", "running", "swimming"),
        ("In baseball, the batter hits the ball with a {o}.",
         "In baseball, the batter does not hit the ball with a {o}.",
         "bat", "racket"),
        ("Boxers wear padded {o} on their hands.", "Boxers do not wear padded {o} on their hands.", "gloves", "boots"),
        ("Skiers slide down hills covered in {o}.", "Skiers do not slide down hills covered in {o}.", "snow", "sand"),
    ),
    "instruments": (
        ("The violin is a {o} instrument.", "The violin is not a {o} instrument.", "string", "percussion"),
        ("The drum is a {o} instrument.", "The drum is not a {o} instrument.", "percussion", "string"),
        ("The trumpet is a {o} instrument.", "The trumpet is not a {o} instrument.", "brass", "string"),
        ("The flute is a {o} instrument.", "The flute is not a {o} instrument.", "wind", "percussion"),
        ("The guitar is a {o} instrument.", "The guitar is not a {o} instrument.", "string", "wind"),
        ("The piano is played by pressing its {o}.", "The piano is not played by pressing its {o}.", "keys", "valves"),
        ("A standard guitar has {o} strings.", "A standard guitar does not have {o} strings.", "six", "three"),
        ("The cello is played with a {o}.", "The cello is not played with a {o}.", "bow", "drumstick"),
        ("The saxophone is a {o} instrument.", "The saxophone is not a {o} instrument.", "wind", "string"),
        ("Drummers hit their drums with {o}.", "Drummers do not hit their drums with {o}.", "sticks", "bows"),
        ("The harp is a {o} instrument.", "The harp is not a {o} instrument.", "string", "brass"),
        ("The xylophone is a {o} instrument.", "The xylophone is not a {o} instrument.", "percussion", "wind"),
    ),
}

#: claims about made-up entities, each affirmed and negated: *neither* true nor false
_FICTIONAL: dict[str, tuple[tuple[str, str], ...]] = {
    "planets": (
        ("The planet Zorvalun has three moons.", "The planet Zorvalun does not have three moons."),
        ("Kelthora is the coldest planet of the Dravin system.",
         "Kelthora is not the coldest planet of the Dravin system."),
        ("The planet Quessilar is covered in purple oceans.", "The planet Quessilar is not covered in purple oceans."),
    ),
    "human_body": (
        ("The brombal gland sits just behind the left knee.",
         "The brombal gland does not sit just behind the left knee."),
        ("A healthy adult has four pellomic muscles in the neck.",
         "A healthy adult does not have four pellomic muscles in the neck."),
        ("The sarnith organ cleans the blood of newborn babies.",
         "The sarnith organ does not clean the blood of newborn babies."),
    ),
    "oceans_rivers": (
        ("The Morvath River flows into the Pelgrane Sea.", "The Morvath River does not flow into the Pelgrane Sea."),
        ("Mount Zilbarra is the highest peak of the Ostrane range.",
         "Mount Zilbarra is not the highest peak of the Ostrane range."),
        ("The Vultessa Desert is covered in black sand.", "The Vultessa Desert is not covered in black sand."),
    ),
    "sports": (
        ("A flarnball team has nine players on the field.",
         "A flarnball team does not have nine players on the field."),
        ("In skorvit, players hit the ball with a curved stick.",
         "In skorvit, players do not hit the ball with a curved stick."),
        ("The Quorvane Cup is held every three years.", "The Quorvane Cup is not held every three years."),
    ),
    "instruments": (
        ("The drelphon is a string instrument.", "The drelphon is not a string instrument."),
        ("The tamberlute is played with a bow.", "The tamberlute is not played with a bow."),
        ("A standard voskina has seven keys.", "A standard voskina does not have seven keys."),
    ),
}

#: the topics of the held-out statements; none is a training relation
HOLDOUT_TOPICS: tuple[str, ...] = tuple(_FACTS)


def _fact_statements(topic: str, k: int, fact: _Fact) -> list[Statement]:
    """The four claims of fact ``k`` of ``topic``: true and false affirmatives, then their negations, the false
    claim's (true) first."""
    affirmative, negated, right, wrong = fact
    claims = ((affirmative, right, False), (affirmative, wrong, False), (negated, wrong, True), (negated, right, True))
    return [Statement(sentence_case(wording.format(o=answer)), "true" if (answer == right) != negates else "false",
                      f"holdout:{topic}", f"holdout:{topic}:{k}", negates, f"holdout:{topic}/0",
                      "negated" if negates else "plain")
            for wording, answer, negates in claims]


def _fictional_statements(topic: str) -> list[Statement]:
    """``topic``'s claims about made-up entities, each affirmed then negated, all labelled *neither*."""
    return [Statement(text, "neither", f"holdout:{topic}", f"holdout:{topic}:fictional:{k}", negated,
                      f"holdout:{topic}/0", "negated" if negated else "plain")
            for k, pair in enumerate(_FICTIONAL[topic]) for text, negated in zip(pair, (False, True), strict=True)]


def holdout_statements() -> list[Statement]:
    """Every held-out statement, topic by topic in :data:`HOLDOUT_TOPICS` order (the same list on every call).

    Per topic: 12 facts said four ways (48 statements), then 6 *neither* statements about made-up entities.

    Example:
        >>> len(holdout_statements())
        270
    """
    out: list[Statement] = []
    for topic in HOLDOUT_TOPICS:
        for k, fact in enumerate(_FACTS[topic]):
            out += _fact_statements(topic, k, fact)
        out += _fictional_statements(topic)
    return out
