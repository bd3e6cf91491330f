"""Culture and language facts: authors, professions, dated events, opposites and French words.

Tables only. People are listed under the one field they are best known for; anyone famous in two of the
listed fields (Leonardo, Newton, Michelangelo) is left out, and so are words with two common opposites.
"""

from __future__ import annotations

__all__ = ["BOOKS", "PROFESSIONS", "MORE_EVENTS", "ANTONYMS", "FRENCH"]

#: book or play -> author
BOOKS: dict[str, str] = {
    "Romeo and Juliet": "William Shakespeare", "Hamlet": "William Shakespeare", "Macbeth": "William Shakespeare",
    "Pride and Prejudice": "Jane Austen", "Oliver Twist": "Charles Dickens", "A Christmas Carol": "Charles Dickens",
    "Great Expectations": "Charles Dickens", "War and Peace": "Leo Tolstoy", "Anna Karenina": "Leo Tolstoy",
    "Crime and Punishment": "Fyodor Dostoevsky", "Don Quixote": "Miguel de Cervantes",
    "Nineteen Eighty-Four": "George Orwell", "Animal Farm": "George Orwell",
    "The Adventures of Tom Sawyer": "Mark Twain", "Adventures of Huckleberry Finn": "Mark Twain",
    "Moby-Dick": "Herman Melville", "Frankenstein": "Mary Shelley", "Dracula": "Bram Stoker",
    "The Great Gatsby": "F. Scott Fitzgerald", "The Hobbit": "J. R. R. Tolkien",
    "The Lord of the Rings": "J. R. R. Tolkien", "Les Miserables": "Victor Hugo",
    "The Divine Comedy": "Dante Alighieri", "The Odyssey": "Homer", "The Iliad": "Homer",
    "Alice's Adventures in Wonderland": "Lewis Carroll", "Jane Eyre": "Charlotte Bronte",
    "Wuthering Heights": "Emily Bronte", "The Old Man and the Sea": "Ernest Hemingway",
    "To Kill a Mockingbird": "Harper Lee", "Robinson Crusoe": "Daniel Defoe", "Gulliver's Travels": "Jonathan Swift",
    "Treasure Island": "Robert Louis Stevenson", "The Jungle Book": "Rudyard Kipling",
    "The Little Prince": "Antoine de Saint-Exupery", "Around the World in Eighty Days": "Jules Verne",
    "Charlie and the Chocolate Factory": "Roald Dahl", "Matilda": "Roald Dahl",
    "Murder on the Orient Express": "Agatha Christie", "Of Mice and Men": "John Steinbeck",
    "Death of a Salesman": "Arthur Miller", "A Doll's House": "Henrik Ibsen",
    "Harry Potter and the Philosopher's Stone": "J. K. Rowling", "The Hound of the Baskervilles": "Arthur Conan Doyle",
    "Brave New World": "Aldous Huxley", "Little Women": "Louisa May Alcott",
    "The Picture of Dorian Gray": "Oscar Wilde",
}

#: famous person -> the field they are best known for
PROFESSIONS: dict[str, str] = {
    "Albert Einstein": "physicist", "Enrico Fermi": "physicist", "Niels Bohr": "physicist",
    "Max Planck": "physicist", "Richard Feynman": "physicist", "Stephen Hawking": "physicist",
    "Vincent van Gogh": "painter", "Pablo Picasso": "painter", "Claude Monet": "painter", "Rembrandt": "painter",
    "Frida Kahlo": "painter", "Salvador Dali": "painter", "Johannes Vermeer": "painter", "Paul Cezanne": "painter",
    "Wolfgang Amadeus Mozart": "composer", "Ludwig van Beethoven": "composer", "Johann Sebastian Bach": "composer",
    "Frederic Chopin": "composer", "Pyotr Tchaikovsky": "composer", "Antonio Vivaldi": "composer",
    "Joseph Haydn": "composer", "Richard Wagner": "composer", "Christopher Columbus": "explorer",
    "Ferdinand Magellan": "explorer", "Marco Polo": "explorer", "Vasco da Gama": "explorer",
    "Roald Amundsen": "explorer", "James Cook": "explorer", "Neil Armstrong": "astronaut",
    "Buzz Aldrin": "astronaut", "Sally Ride": "astronaut", "Socrates": "philosopher", "Plato": "philosopher",
    "Confucius": "philosopher", "Immanuel Kant": "philosopher", "Friedrich Nietzsche": "philosopher",
    "Thomas Edison": "inventor", "Alexander Graham Bell": "inventor", "James Watt": "inventor",
    "Johannes Gutenberg": "inventor", "Pele": "footballer", "Diego Maradona": "footballer",
    "Lionel Messi": "footballer", "Cristiano Ronaldo": "footballer",
}

#: event -> year, beyond :data:`calibration.facts.EVENTS`
MORE_EVENTS: dict[str, int] = {
    "the Battle of Hastings": 1066, "the Battle of Waterloo": 1815, "the start of the Second World War": 1939,
    "the end of the First World War": 1918, "the October Revolution in Russia": 1917,
    "the attack on Pearl Harbor": 1941,
    "the first ascent of Mount Everest": 1953, "Yuri Gagarin's flight into space": 1961,
    "the assassination of John F. Kennedy": 1963, "the release of the first iPhone": 2007,
    "Nelson Mandela's release from prison": 1990, "the reunification of Germany": 1990,
    "the founding of the United Nations": 1945, "the Wall Street Crash": 1929, "the Chernobyl disaster": 1986,
    "the Great Fire of London": 1666, "the first modern Olympic Games": 1896,
    "the assassination of Abraham Lincoln": 1865, "the founding of the People's Republic of China": 1949,
    "the independence of India": 1947, "the fall of Constantinople": 1453,
    "the publication of Darwin's On the Origin of Species": 1859, "the Cuban Missile Crisis": 1962,
    "the signing of the Treaty of Versailles": 1919, "the Boston Tea Party": 1773,
    "the September 11 attacks": 2001, "the launch of the Hubble Space Telescope": 1990,
    "the Boxing Day tsunami in the Indian Ocean": 2004, "the first Space Shuttle launch": 1981,
    "the completion of the Eiffel Tower": 1889, "the Battle of Gettysburg": 1863,
    "the atomic bombing of Hiroshima": 1945, "the posting of Martin Luther's Ninety-five Theses": 1517,
    "the death of Queen Victoria": 1901, "the coronation of Queen Elizabeth II": 1953,
    "the opening of the Channel Tunnel": 1994, "the start of the American Civil War": 1861,
    "the end of the American Civil War": 1865,
}

#: word -> its opposite (one direction only; no object is a second opposite of another word)
ANTONYMS: dict[str, str] = {
    "hot": "cold", "up": "down", "day": "night", "happy": "sad", "fast": "slow", "open": "closed",
    "heavy": "light", "big": "small", "young": "old", "rich": "poor", "wet": "dry", "empty": "full",
    "early": "late", "left": "right", "inside": "outside", "win": "lose", "buy": "sell", "push": "pull",
    "alive": "dead", "thick": "thin", "north": "south", "east": "west", "love": "hate", "strong": "weak",
    "clean": "dirty", "loud": "quiet", "asleep": "awake", "first": "last", "friend": "enemy",
    "summer": "winter", "entrance": "exit", "question": "answer", "before": "after", "always": "never",
    "high": "low", "near": "far", "wide": "narrow", "deep": "shallow", "smooth": "rough",
    "cheap": "expensive", "safe": "dangerous", "polite": "rude", "ancient": "modern", "import": "export",
    "add": "subtract", "increase": "decrease", "maximum": "minimum", "tall": "short",
}

#: English word -> French word (everyday words whose French spelling needs no accent)
FRENCH: dict[str, str] = {
    "water": "eau", "house": "maison", "cat": "chat", "dog": "chien", "bread": "pain", "book": "livre",
    "sun": "soleil", "moon": "lune", "apple": "pomme", "car": "voiture", "friend": "ami", "red": "rouge",
    "green": "vert", "blue": "bleu", "black": "noir", "white": "blanc", "small": "petit", "good": "bon",
    "thank you": "merci", "hello": "bonjour", "cheese": "fromage", "milk": "lait", "wine": "vin", "sea": "mer",
    "man": "homme", "woman": "femme", "child": "enfant", "night": "nuit", "love": "amour", "horse": "cheval",
    "bird": "oiseau", "fish": "poisson", "flower": "fleur", "tree": "arbre", "city": "ville", "king": "roi",
    "yes": "oui", "no": "non", "cow": "vache", "chair": "chaise", "door": "porte", "hand": "main",
    "rain": "pluie", "snow": "neige", "fire": "feu", "morning": "matin", "girl": "fille", "three": "trois",
}
