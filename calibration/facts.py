"""Facts the project encodes itself, from which labelled statements and QA items are generated.

Kept to well-known, stable facts so that labels are unambiguous.
"""

from __future__ import annotations

__all__ = ["COUNTRIES", "ELEMENTS", "EVENTS", "UNITS"]

#: country -> (capital, continent, currency)
COUNTRIES: dict[str, tuple[str, str, str]] = {
    "France": ("Paris", "Europe", "euro"),
    "Germany": ("Berlin", "Europe", "euro"),
    "Italy": ("Rome", "Europe", "euro"),
    "Spain": ("Madrid", "Europe", "euro"),
    "Portugal": ("Lisbon", "Europe", "euro"),
    "Greece": ("Athens", "Europe", "euro"),
    "Austria": ("Vienna", "Europe", "euro"),
    "Ireland": ("Dublin", "Europe", "euro"),
    "Norway": ("Oslo", "Europe", "krone"),
    "Sweden": ("Stockholm", "Europe", "krona"),
    "Poland": ("Warsaw", "Europe", "zloty"),
    "Hungary": ("Budapest", "Europe", "forint"),
    "Russia": ("Moscow", "Europe", "ruble"),
    "United Kingdom": ("London", "Europe", "pound"),
    "Japan": ("Tokyo", "Asia", "yen"),
    "China": ("Beijing", "Asia", "yuan"),
    "India": ("New Delhi", "Asia", "rupee"),
    "South Korea": ("Seoul", "Asia", "won"),
    "Thailand": ("Bangkok", "Asia", "baht"),
    "Vietnam": ("Hanoi", "Asia", "dong"),
    "Indonesia": ("Jakarta", "Asia", "rupiah"),
    "Egypt": ("Cairo", "Africa", "pound"),
    "Kenya": ("Nairobi", "Africa", "shilling"),
    "Nigeria": ("Abuja", "Africa", "naira"),
    "Morocco": ("Rabat", "Africa", "dirham"),
    "Ghana": ("Accra", "Africa", "cedi"),
    "Ethiopia": ("Addis Ababa", "Africa", "birr"),
    "Canada": ("Ottawa", "North America", "dollar"),
    "Mexico": ("Mexico City", "North America", "peso"),
    "United States": ("Washington", "North America", "dollar"),
    "Cuba": ("Havana", "North America", "peso"),
    "Brazil": ("Brasilia", "South America", "real"),
    "Argentina": ("Buenos Aires", "South America", "peso"),
    "Peru": ("Lima", "South America", "sol"),
    "Chile": ("Santiago", "South America", "peso"),
    "Colombia": ("Bogota", "South America", "peso"),
    "Australia": ("Canberra", "Oceania", "dollar"),
    "New Zealand": ("Wellington", "Oceania", "dollar"),
    "Netherlands": ("Amsterdam", "Europe", "euro"),
    "Belgium": ("Brussels", "Europe", "euro"),
    "Finland": ("Helsinki", "Europe", "euro"),
    "Croatia": ("Zagreb", "Europe", "euro"),
    "Denmark": ("Copenhagen", "Europe", "krone"),
    "Switzerland": ("Bern", "Europe", "franc"),
    "Czech Republic": ("Prague", "Europe", "koruna"),
    "Romania": ("Bucharest", "Europe", "leu"),
    "Ukraine": ("Kyiv", "Europe", "hryvnia"),
    "Iceland": ("Reykjavik", "Europe", "krona"),
    "Serbia": ("Belgrade", "Europe", "dinar"),
    "Pakistan": ("Islamabad", "Asia", "rupee"),
    "Bangladesh": ("Dhaka", "Asia", "taka"),
    "Philippines": ("Manila", "Asia", "peso"),
    "Malaysia": ("Kuala Lumpur", "Asia", "ringgit"),
    "Iran": ("Tehran", "Asia", "rial"),
    "Iraq": ("Baghdad", "Asia", "dinar"),
    "Saudi Arabia": ("Riyadh", "Asia", "riyal"),
    "Nepal": ("Kathmandu", "Asia", "rupee"),
    "Mongolia": ("Ulaanbaatar", "Asia", "tugrik"),
    "Afghanistan": ("Kabul", "Asia", "afghani"),
    "Algeria": ("Algiers", "Africa", "dinar"),
    "Tunisia": ("Tunis", "Africa", "dinar"),
    "Senegal": ("Dakar", "Africa", "franc"),
    "Uganda": ("Kampala", "Africa", "shilling"),
    "Angola": ("Luanda", "Africa", "kwanza"),
    "Sudan": ("Khartoum", "Africa", "pound"),
    "Venezuela": ("Caracas", "South America", "bolivar"),
    "Ecuador": ("Quito", "South America", "dollar"),
    "Uruguay": ("Montevideo", "South America", "peso"),
    "Paraguay": ("Asuncion", "South America", "guarani"),
    "Jamaica": ("Kingston", "North America", "dollar"),
    "Panama": ("Panama City", "North America", "balboa"),
    "Guatemala": ("Guatemala City", "North America", "quetzal"),
    "Fiji": ("Suva", "Oceania", "dollar"),
    "Papua New Guinea": ("Port Moresby", "Oceania", "kina"),
}

#: element -> chemical symbol
ELEMENTS: dict[str, str] = {
    "hydrogen": "H", "helium": "He", "carbon": "C", "nitrogen": "N", "oxygen": "O", "sodium": "Na",
    "magnesium": "Mg", "aluminium": "Al", "silicon": "Si", "sulfur": "S", "chlorine": "Cl", "potassium": "K",
    "calcium": "Ca", "iron": "Fe", "copper": "Cu", "zinc": "Zn", "silver": "Ag", "tin": "Sn", "gold": "Au",
    "mercury": "Hg", "lead": "Pb", "uranium": "U", "neon": "Ne", "lithium": "Li", "nickel": "Ni",
}

#: event -> year
EVENTS: dict[str, int] = {
    "the first Moon landing": 1969,
    "the fall of the Berlin Wall": 1989,
    "the end of the Second World War": 1945,
    "the start of the First World War": 1914,
    "the sinking of the Titanic": 1912,
    "the French Revolution's storming of the Bastille": 1789,
    "Columbus's first voyage to the Americas": 1492,
    "the American Declaration of Independence": 1776,
    "the launch of Sputnik": 1957,
    "the dissolution of the Soviet Union": 1991,
    "the first powered flight by the Wright brothers": 1903,
    "the signing of Magna Carta": 1215,
}

#: (quantity, unit, equals, other unit)
UNITS: tuple[tuple[str, str, int, str], ...] = (
    ("one", "kilometre", 1000, "metres"),
    ("one", "metre", 100, "centimetres"),
    ("one", "hour", 60, "minutes"),
    ("one", "minute", 60, "seconds"),
    ("one", "day", 24, "hours"),
    ("one", "week", 7, "days"),
    ("one", "kilogram", 1000, "grams"),
    ("one", "litre", 1000, "millilitres"),
    ("one", "year", 12, "months"),
    ("one", "dozen", 12, "items"),
)
