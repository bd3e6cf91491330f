"""Science and nature facts: atomic numbers, animal classes and legs, typical colours, unit conversions.

Tables only. Left out where a kid's encyclopedia would hedge: spiders among insects, crabs' legs, gemstones
that come in several colours, units with two accepted sizes (a kilobyte, a year's days).
"""

from __future__ import annotations

__all__ = ["ATOMIC_NUMBERS", "ANIMAL_CLASSES", "LEGS", "COLOURS", "MORE_UNITS"]

#: element -> atomic number (protons in its nucleus)
ATOMIC_NUMBERS: dict[str, int] = {
    "hydrogen": 1, "helium": 2, "lithium": 3, "beryllium": 4, "boron": 5, "carbon": 6, "nitrogen": 7,
    "oxygen": 8, "fluorine": 9, "neon": 10, "sodium": 11, "magnesium": 12, "aluminium": 13, "silicon": 14,
    "phosphorus": 15, "sulfur": 16, "chlorine": 17, "argon": 18, "potassium": 19, "calcium": 20,
    "titanium": 22, "iron": 26, "nickel": 28, "copper": 29, "zinc": 30, "silver": 47, "tin": 50, "iodine": 53,
    "platinum": 78, "gold": 79, "mercury": 80, "lead": 82, "uranium": 92,
}

#: animal -> its class
ANIMAL_CLASSES: dict[str, str] = {
    "dog": "mammal", "cat": "mammal", "horse": "mammal", "cow": "mammal", "elephant": "mammal",
    "whale": "mammal", "dolphin": "mammal", "bat": "mammal", "lion": "mammal", "tiger": "mammal",
    "bear": "mammal", "mouse": "mammal", "kangaroo": "mammal", "giraffe": "mammal", "rabbit": "mammal",
    "eagle": "bird", "penguin": "bird", "ostrich": "bird", "owl": "bird", "parrot": "bird", "sparrow": "bird",
    "chicken": "bird", "duck": "bird", "pigeon": "bird", "shark": "fish", "salmon": "fish", "trout": "fish",
    "tuna": "fish", "goldfish": "fish", "cod": "fish", "snake": "reptile", "crocodile": "reptile",
    "lizard": "reptile", "turtle": "reptile", "tortoise": "reptile", "frog": "amphibian", "toad": "amphibian",
    "salamander": "amphibian", "newt": "amphibian", "ant": "insect", "bee": "insect", "butterfly": "insect",
    "beetle": "insect", "grasshopper": "insect", "mosquito": "insect", "ladybird": "insect",
}

#: animal -> number of legs
LEGS: dict[str, int] = {
    "dog": 4, "cat": 4, "horse": 4, "cow": 4, "elephant": 4, "lion": 4, "tiger": 4, "bear": 4, "giraffe": 4,
    "zebra": 4, "pig": 4, "sheep": 4, "goat": 4, "mouse": 4, "rabbit": 4, "camel": 4, "frog": 4, "lizard": 4,
    "crocodile": 4, "tortoise": 4, "chicken": 2, "duck": 2, "ostrich": 2, "penguin": 2, "eagle": 2,
    "parrot": 2, "owl": 2, "flamingo": 2, "ant": 6, "bee": 6, "beetle": 6, "grasshopper": 6, "mosquito": 6,
    "ladybird": 6, "spider": 8, "tarantula": 8, "snake": 0, "earthworm": 0, "goldfish": 0, "dolphin": 0,
}

#: thing -> its typical colour
COLOURS: dict[str, str] = {
    "grass": "green", "snow": "white", "blood": "red", "coal": "black", "milk": "white",
    "a ripe banana": "yellow", "a ripe tomato": "red", "a lemon": "yellow", "an orange": "orange",
    "a carrot": "orange", "a pumpkin": "orange", "broccoli": "green", "a cucumber": "green", "a lime": "green",
    "spinach": "green", "a garden pea": "green", "salt": "white", "a polar bear": "white", "an elephant": "grey",
    "a canary": "yellow", "soot": "black", "tar": "black", "an emerald": "green", "a raven": "black",
    "milk chocolate": "brown", "cocoa powder": "brown", "a coconut shell": "brown", "a clear daytime sky": "blue",
    "a ripe strawberry": "red", "a stop sign": "red", "a tennis ball": "yellow", "a sunflower": "yellow",
}

#: (quantity, unit, equals, other unit), the shape of :data:`calibration.facts.UNITS`
MORE_UNITS: tuple[tuple[str, str, int, str], ...] = (
    ("one", "foot", 12, "inches"),
    ("one", "yard", 3, "feet"),
    ("one", "yard", 36, "inches"),
    ("one", "mile", 1760, "yards"),
    ("one", "century", 100, "years"),
    ("one", "decade", 10, "years"),
    ("one", "millennium", 1000, "years"),
    ("one", "millennium", 10, "centuries"),
    ("one", "century", 10, "decades"),
    ("one", "tonne", 1000, "kilograms"),
    ("one", "centimetre", 10, "millimetres"),
    ("one", "metre", 1000, "millimetres"),
    ("one", "week", 168, "hours"),
    ("one", "hour", 3600, "seconds"),
    ("one", "day", 1440, "minutes"),
    ("one", "gross", 144, "items"),
    ("one", "pound", 16, "ounces"),
    ("one", "gallon", 8, "pints"),
    ("one", "fortnight", 14, "days"),
    ("one", "kilowatt", 1000, "watts"),
    ("one", "byte", 8, "bits"),
    ("one", "leap year", 366, "days"),
)
