"""Geography facts beyond :mod:`calibration.facts`: languages, famous cities and landmarks.

Tables only. Countries carry "the" where English needs it; ambiguous cases are left out: countries where no
language is the first language of most people (India, Indonesia, Iran), cities that are also capitals,
landmarks whose names give their city away or that have a namesake elsewhere.
"""

from __future__ import annotations

__all__ = ["LANGUAGES", "CITIES", "LANDMARKS"]

#: country -> the language most of its people speak as their first language
LANGUAGES: dict[str, str] = {
    "France": "French", "Germany": "German", "Austria": "German", "Italy": "Italian", "Spain": "Spanish",
    "Mexico": "Spanish", "Argentina": "Spanish", "Colombia": "Spanish", "Chile": "Spanish", "Peru": "Spanish",
    "Venezuela": "Spanish", "Uruguay": "Spanish", "Portugal": "Portuguese", "Brazil": "Portuguese",
    "Greece": "Greek", "the Netherlands": "Dutch", "Sweden": "Swedish", "Norway": "Norwegian",
    "Denmark": "Danish", "Iceland": "Icelandic", "Poland": "Polish", "Hungary": "Hungarian",
    "the Czech Republic": "Czech", "Romania": "Romanian", "Russia": "Russian", "Turkey": "Turkish",
    "Egypt": "Arabic", "Saudi Arabia": "Arabic", "Japan": "Japanese", "China": "Chinese", "South Korea": "Korean",
    "Vietnam": "Vietnamese", "Bangladesh": "Bengali", "Mongolia": "Mongolian", "the United Kingdom": "English",
    "the United States": "English", "Australia": "English", "New Zealand": "English",
}

#: famous city that is not its country's capital -> country
CITIES: dict[str, str] = {
    "New York": "the United States", "Los Angeles": "the United States", "Chicago": "the United States",
    "San Francisco": "the United States", "Toronto": "Canada", "Vancouver": "Canada", "Montreal": "Canada",
    "Sydney": "Australia", "Melbourne": "Australia", "Rio de Janeiro": "Brazil", "Sao Paulo": "Brazil",
    "Barcelona": "Spain", "Seville": "Spain", "Milan": "Italy", "Venice": "Italy", "Florence": "Italy",
    "Naples": "Italy", "Munich": "Germany", "Hamburg": "Germany", "Frankfurt": "Germany", "Marseille": "France",
    "Lyon": "France", "Manchester": "the United Kingdom", "Liverpool": "the United Kingdom",
    "Istanbul": "Turkey", "Mumbai": "India", "Shanghai": "China", "Osaka": "Japan", "Kyoto": "Japan",
    "Saint Petersburg": "Russia", "Dubai": "the United Arab Emirates", "Johannesburg": "South Africa",
    "Casablanca": "Morocco", "Alexandria": "Egypt", "Auckland": "New Zealand", "Rotterdam": "the Netherlands",
    "Geneva": "Switzerland", "Zurich": "Switzerland", "Porto": "Portugal", "Krakow": "Poland",
    "Busan": "South Korea", "Lagos": "Nigeria",
}

#: landmark -> the city it stands in
LANDMARKS: dict[str, str] = {
    "the Eiffel Tower": "Paris", "the Louvre": "Paris", "the Arc de Triomphe": "Paris", "the Colosseum": "Rome",
    "the Trevi Fountain": "Rome", "Big Ben": "London", "Buckingham Palace": "London", "Tower Bridge": "London",
    "the Shard": "London", "Wembley Stadium": "London", "the Statue of Liberty": "New York",
    "Times Square": "New York", "the Empire State Building": "New York", "the Golden Gate Bridge": "San Francisco",
    "the Brandenburg Gate": "Berlin", "Checkpoint Charlie": "Berlin", "Red Square": "Moscow",
    "the Kremlin": "Moscow", "the Acropolis": "Athens", "the Parthenon": "Athens",
    "the Sagrada Familia": "Barcelona", "the Taj Mahal": "Agra", "the Forbidden City": "Beijing",
    "Tiananmen Square": "Beijing", "the Burj Khalifa": "Dubai", "the Burj Al Arab": "Dubai",
    "the statue of Christ the Redeemer": "Rio de Janeiro", "the White House": "Washington",
    "the Lincoln Memorial": "Washington", "the Hollywood Sign": "Los Angeles", "the Space Needle": "Seattle",
    "the CN Tower": "Toronto", "the Little Mermaid statue": "Copenhagen", "the Atomium": "Brussels",
    "Hagia Sophia": "Istanbul", "the Rijksmuseum": "Amsterdam", "the Prado Museum": "Madrid",
    "the Alhambra": "Granada", "the Petronas Towers": "Kuala Lumpur", "the Gateway of India": "Mumbai",
    "the Rialto Bridge": "Venice", "the Charles Bridge": "Prague",
    "Table Mountain": "Cape Town", "Marina Bay Sands": "Singapore",
}
