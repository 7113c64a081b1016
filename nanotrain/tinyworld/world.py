"""Tinyworld: the built-in default data, a generated little world whose every fact is known.

A few towns, 60 people and 40 pets, each with a handful of attributes drawn from small closed value
sets (colours, jobs, foods, ...). From these facts the module renders every file the pipeline needs, so that each
stage can be *measured* against the truth (nanotrain/tinyworld/gold.py holds the scorers):

    world.json                 entities and facts (+ the generator config and version); Gold rebuilds all from it
    pretrain.jsonl             {"text"}: encyclopedia passages, fact cards, stories; every fact in >= 6 English
                               wordings, plus a minority of documents in Chinese; people of both splits
    crawl.warc.gz              the web crawl the pipeline cleans and pretrains on: every pretraining document in HTML
                               pages with boilerplate, plus duplicates and junk, each page's true kind in a WARC header
                               (web.py)
    sft_train/val.jsonl        {"messages": [{"role", "content"}, ...], "writer"}: questions and small tasks, split A
                               only, written by writers of mixed quality (writers.py)
    label_prompts.jsonl        prompts the labelling stage (data/label.py) has the SFT model answer and labellers rank
    prefs_helpful_train/val    {"prompt", "chosen", "rejected", "kind"}: right vs wrong/off-topic/rude/rambling/refusal
    prefs_safe_train/val       same: harmful -> refusal over compliance or over "I don't know ..."; benign -> help over a
                               needless refusal
    feedback_train.jsonl       {"prompt", "completion", "label"}: unpaired thumbs up / down (KTO)
    eval_b.jsonl               held-out questions about split-B people and pets (facts seen only in pretraining)
    eval_zh.jsonl              held-out questions in Chinese, both splits (+ "answer_en")
    eval_prompts / eval_harmful / eval_benign .jsonl   held-out benign, harmful, and benign-but-close prompts
    eval_unknown.jsonl         held-out questions the world cannot answer (people, pets, towns it does not have)
    rl_prompts.jsonl           {"prompt", "kind", "split", "harmful", "unknown"}: split A, 25% harmful, 15% their
                               harmless look-alikes, and 10% more that the world cannot answer
Eval records: {"prompt", "answer" (the oracle's), "kind", "split", "lang", "harmful", "chance"}. No held-out
prompt appears verbatim in any training file, except on the crawl's eval_leak pages, which decontamination removes.

This module draws the world and renders pretrain.jsonl; web.py puts those documents into the crawl; the chat tasks
(every prompt with its oracle answer) are in tasks.py, every instruction / preference / feedback / evaluation file
comes from chat.py (build_chat), and generate.py (write_world) writes them all next to world.json.

People are split in two: split A appears in the instruction/preference data, split B only in pretraining, so a
model that answers split-B questions must have stored those facts during pretraining.

    python data/tinyworld.py --out data/tinyworld --seed 0        # the CLI around generate.write_world()

Everything is deterministic from the seed: every random choice uses a ``random.Random`` seeded with a string
(string seeds are hashed with SHA-512, so they do not depend on PYTHONHASHSEED).
"""
from __future__ import annotations

import dataclasses
import json
import random
import zlib
from dataclasses import dataclass

from nanotrain.cli import flag
from nanotrain.errors import DataError


@dataclass
class WorldConfig:
    out: str = flag("data/tinyworld", "output folder")
    seed: int = flag(0, "random seed; the same seed gives byte-identical files")
    people: int = flag(60, "number of people (20 to 164); few enough that the 4M-parameter model stores most "
                           "of their facts in the pipeline's 420 pretraining steps")
    animals: int = flag(40, "number of pets (at most 50), each owned by a different person")
    towns: int = flag(10, "number of towns (at most 12)")
    split_b: float = flag(0.3, "share of people (and their pets) held out of all instruction data: split B")
    scale: float = flag(1.0, "multiplies every size below; held-out eval sets only ever shrink with it")
    pretrain_docs: int = flag(14000, "pretraining documents (x scale); ~1.5M GPT-2 tokens at scale 1")
    zh_share: float = flag(0.12, "share of pretraining documents written in Chinese")
    crawl_junk: float = flag(1.0, "multiplies the rate of every junk kind of the web crawl (web.JUNK_RATES)")
    leak_share: float = flag(0.5, "share of the eval_b / eval_prompts questions the crawl leaks with their answers")
    sft: int = flag(4000, "SFT training conversations (x scale)")
    sft_harmful: float = flag(0.15, "share of SFT conversations that are harmful requests answered with a refusal")
    sft_lookalike: float = flag(0.15, "share of SFT conversations that are harmless look-alikes of harmful requests "
                                       "(borrow, look after a pet, cheer up), on top of the benign mix's few")
    sft_unknown: float = flag(0.1, "share of SFT conversations that ask what the world cannot answer")
    careful: float = flag(0.35, "share of demonstrations of every kind of task written by careful writers; the rest "
                                "by writers with the habits of writers.py (hedging, chatty, hurried, generic)")
    closing: float = flag(0.3, "share of careful writers' answers that end with the stock closing phrase (others: "
                               "0.05), the proxy a reward model can latch onto")
    label_prompts: int = flag(1100, "prompts for the labelling stage (x scale)")
    rl_unknown: float = flag(0.1, "questions the world cannot answer added to rl_prompts, as a share of them")
    eval_unknown: int = flag(100, "held-out questions the world cannot answer (x scale)")
    prefs_helpful: int = flag(3000, "helpfulness preference pairs for training (x scale); val gets a tenth as many")
    prefs_safe: int = flag(2000, "safety preference pairs for training (x scale); val gets a tenth as many")
    prefs_admissions: float = flag(0.25, "pairs putting a refusal of a harmful request over an admission of not "
                                         "knowing, added to the safety pairs, as a share of them")
    feedback: int = flag(3000, "binary feedback records (x scale)")
    rl_prompts: int = flag(1000, "prompts for PPO / online DPO (x scale)")
    eval_prompts: int = flag(300, "held-out benign prompts for judging alignment (x scale)")
    eval_harmful: int = flag(200, "held-out harmful prompts (x scale)")
    eval_benign: int = flag(200, "held-out benign prompts, many close to harmful ones (x scale)")
    eval_zh: int = flag(300, "held-out factual questions in Chinese (x scale)")

    def n(self, base: int) -> int:
        return max(8, round(base * self.scale))

    def n_eval(self, base: int) -> int:
        """Held-out sets shrink with --scale (quick tests) but never grow: they must stay fresh prompts."""
        return min(base, self.n(base))


# ----------------------------------------------------------------------------------------------------------
# The closed value sets, English -> Chinese. Small on purpose: a tiny model must be able to learn them all.
# No Chinese value is a substring of another (tests check), so a Chinese answer can be matched by substring.

COLOURS = {"red": "红色", "blue": "蓝色", "green": "绿色", "yellow": "黄色", "black": "黑色", "white": "白色",
           "orange": "橙色", "purple": "紫色", "pink": "粉色", "grey": "灰色"}
JOBS = {"baker": "烘焙师", "teacher": "老师", "farmer": "农民", "doctor": "医生", "painter": "画家",
        "sailor": "水手", "singer": "歌手", "builder": "建筑工人", "nurse": "护士", "tailor": "裁缝"}
FOODS = {"apples": "苹果", "bread": "面包", "soup": "汤", "rice": "米饭", "cheese": "奶酪", "fish": "鱼",
         "cake": "蛋糕", "noodles": "面条", "carrots": "胡萝卜", "honey": "蜂蜜"}
ITEMS = {"bicycle": ("自行车", "辆"), "hat": ("帽子", "顶"), "coat": ("外套", "件"), "umbrella": ("雨伞", "把"),
         "kite": ("风筝", "只"), "scarf": ("围巾", "条"), "boat": ("小船", "艘"), "backpack": ("背包", "个"),
         "lamp": ("台灯", "盏"), "cup": ("杯子", "个")}
SPECIES = {"dog": ("狗", "只"), "cat": ("猫", "只"), "horse": ("马", "匹"), "rabbit": ("兔子", "只"),
           "parrot": ("鹦鹉", "只"), "goat": ("山羊", "只"), "duck": ("鸭子", "只"), "turtle": ("乌龟", "只")}
FURS = {"brown": "棕色", "black": "黑色", "white": "白色", "grey": "灰色", "golden": "金色", "spotted": "花斑"}
LANDMARKS = {"river": "小河", "castle": "城堡", "lighthouse": "灯塔", "windmill": "风车", "market": "集市",
             "bridge": "石桥", "clock tower": "钟楼", "lake": "湖泊", "library": "图书馆", "harbour": "港口",
             "old oak": "老橡树", "fountain": "喷泉"}
AGES = list(range(20, 68, 4))  # 12 ages, so "How old is X?" has a small closed answer set too
TOWNS = ["Ashford", "Brookvale", "Cedarton", "Dunmore", "Elmwick", "Fernhill", "Glenrock", "Harrowby",
         "Ivydale", "Junebury", "Kingsmere", "Larkspur"]
FEMALE = ("Lena Mia Anna Clara Emma Sofia Nora Ella Lucy Ruby Alice Zoe Ivy Hannah Julia Sara Leah Eva Olivia "
          "Chloe Maya Laura Nina Paula Rita Tina Vera Wendy Yara Greta Helen Irene Jane Kate Lily Molly Naomi "
          "Olga Petra Rosa Selma Thea Violet Willa Yvonne Zara Abby Bianca Carla Diana Edith Fiona Gina Heidi "
          "Ingrid Jenny Karen Linda Marta Nadia Pia Rachel Sandra Tessa Ursula Vicky Alma Beth Cora Dora Elsa "
          "Freya Gwen Hilda Isla Kira Lola Mona Nell Orla Agnes").split()
MALE = ("Tom Sam Ben Leo Noah Liam Oscar Hugo Felix Adam Oliver Jacob Ethan Lucas Henry Arthur Theo Ivan Jonas "
        "Karl Louis Marco Nils Otto Paul Rafael Simon Victor Walter Xavier Yusuf Zack Albert Boris Carl Daniel "
        "Edgar Frank George Harry Isaac Joel Kevin Lars Martin Nathan Omar Peter Ralph Stefan Tobias Ulrich "
        "Vincent Wesley Alan Bruno Colin David Emil Fred Hans Igor Jamal Kurt Leon Miles Neil Owen Pablo Ruben "
        "Sven Troy Umar Vito Wade Yann Aaron Brian Cyril Dean Eric Finn Gus").split()
PET_NAMES = ("Rex Bella Max Luna Charlie Daisy Milo Coco Rocky Bonnie Buddy Pepper Ginger Biscuit Shadow "
             "Whiskers Patches Toby Rusty Sunny Oreo Peanut Pickles Muffin Nugget Socks Snowy Bubbles Ziggy Pip "
             "Dotty Fluffy Gizmo Hazel Juno Kiki Lucky Mango Olive Pumpkin Scout Tiger Waffles Yoyo Zorro Benny "
             "Dusty Fudge Bramble Cricket").split()
WEATHER = {"sunny": "晴朗", "rainy": "下雨", "windy": "刮风", "cold": "寒冷", "warm": "温暖", "foggy": "有雾"}
DAYS = {"Monday": "星期一", "Tuesday": "星期二", "Wednesday": "星期三", "Thursday": "星期四", "Friday": "星期五",
        "Saturday": "星期六", "Sunday": "星期日"}
# Bump when the generated text changes: Gold rebuilds prompts from world.json with this code, so both must agree.
VERSION = 11  # 3: writers of mixed quality, questions the world cannot answer, label_prompts.jsonl; 4: the crawl;
# 5: SFT holds more harmless look-alikes; 6: 60 people, more look-alikes and unanswerable questions in SFT,
# a specific refusal over a generic one in the safety pairs; 7: more phrasings of each harmful request and of its
# look-alikes, in the same sentence frames, and more of both in SFT (15% each); 8: 40 pets (were 20) and twice the
# phrasings of pet care, more of hurting a pet (the eval files and PPO's prompts held all but a few of the pet-care
# prompts about split-A pets, so SFT repeated those few; and with 14 pets in split A its model told care from harm by
# the pet's name, refusing to help care for pets SFT never named); 9: safety pairs with a refusal over an admission
# of not knowing (DPO and KTO answered harmful requests in never-trained phrasings with "I don't know anyone called
# ... in Tinyworld.", the answer their pairs reward on questions the world cannot answer); 10: writers who guess at what
# the world cannot answer open with the hedge ("I think Zelda lives in Ashford."), so greedy decoding shows the guess;
# 11: at least eight training phrasings of every harmful request, some with other words for the harm (an SFT model
# trained three times as long answered a never-trained phrasing of bullying with a fact about the person)


@dataclass
class Person:
    name: str
    gender: str  # "f" or "m": only for pronouns
    town: str
    job: str
    food: str
    item: str
    colour: str  # the colour of the person's item
    age: int
    friend: str  # best friend, always from the same split
    split: str  # "A" (instruction data) or "B" (pretraining only)


@dataclass
class Animal:
    name: str
    species: str
    fur: str
    owner: str
    split: str  # the owner's split


@dataclass
class World:
    config: dict
    towns: dict[str, str]  # town -> landmark
    people: list[Person]
    animals: list[Animal]
    version: int = VERSION

    def __post_init__(self):
        self.person = {p.name: p for p in self.people}
        self.animal = {a.name: a for a in self.animals}
        self.pet_of = {a.owner: a for a in self.animals}

    def split(self, s: str) -> list[Person]:
        return [p for p in self.people if p.split == s]

    def to_json(self) -> str:
        d = {"version": self.version, "config": self.config, "towns": self.towns, "people": [dataclasses.asdict(p) for p in self.people],
             "animals": [dataclasses.asdict(a) for a in self.animals]}
        return json.dumps(d, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "World":
        d = json.loads(text)
        return cls(d["config"], d["towns"], [Person(**p) for p in d["people"]], [Animal(**a) for a in d["animals"]],
                   d.get("version", 0))


def make_world(cfg: WorldConfig) -> World:
    """Draw the entities and their facts."""
    if not (20 <= cfg.people <= len(FEMALE) + len(MALE) and 2 <= cfg.towns <= len(TOWNS)
            and 1 <= cfg.animals <= min(cfg.people, len(PET_NAMES))):
        raise DataError(f"tinyworld needs 20..{len(FEMALE) + len(MALE)} people, 2..{len(TOWNS)} towns and "
                         f"1..{len(PET_NAMES)} pets (at most one per person)")
    rng = random.Random(f"tinyworld-{cfg.seed}-world")
    towns = dict(zip(TOWNS[:cfg.towns], rng.sample(list(LANDMARKS), cfg.towns)))
    names = [(n, "f") for n in FEMALE] + [(n, "m") for n in MALE]
    chosen = rng.sample(names, cfg.people)
    n_b = round(cfg.people * cfg.split_b)
    people = []
    for i, (name, g) in enumerate(chosen):
        people.append(Person(name, g, rng.choice(list(towns)), rng.choice(list(JOBS)), rng.choice(list(FOODS)),
                             rng.choice(list(ITEMS)), rng.choice(list(COLOURS)), rng.choice(AGES), "",
                             "B" if i < n_b else "A"))
    for p in people:  # a best friend from the same split, so instruction data never names a split-B person
        p.friend = rng.choice([q.name for q in people if q.split == p.split and q is not p])
    owners = rng.sample(people, cfg.animals)
    animals = [Animal(n, rng.choice(list(SPECIES)), rng.choice(list(FURS)), o.name, o.split)
               for n, o in zip(rng.sample(PET_NAMES, cfg.animals), owners)]
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"}  # where it was written is no fact
    return World(config, towns, people, animals)


# ----------------------------------------------------------------------------------------------------------
# Slots: every template is a str.format() string over these names.

def a(word) -> str:
    return ("an " if str(word)[0] in "aeiou" else "a ") + str(word)


def names_list(names: list[str], conj: str = "and") -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" {conj} " + names[-1]


def person_slots(w: World, p: Person, prefix: str = "") -> dict:
    f = p.gender == "f"
    s = dict(N=p.name, sub="she" if f else "he", Sub="She" if f else "He", obj="her" if f else "him",
             pos="her" if f else "his", Pos="Her" if f else "His", ta="她" if f else "他", town=p.town,
             landmark=w.towns[p.town], landmark_zh=LANDMARKS[w.towns[p.town]], job=p.job, a_job=a(p.job),
             job_zh=JOBS[p.job], food=p.food, food_zh=FOODS[p.food], item=p.item, item_zh=ITEMS[p.item][0],
             mw=ITEMS[p.item][1], colour=p.colour, a_colour=a(p.colour), colour_zh=COLOURS[p.colour],
             age=p.age, F=p.friend)
    pet = w.pet_of.get(p.name)
    if pet:
        s.update(animal_slots(pet))
    return {prefix + k: v for k, v in s.items()}


def animal_slots(x: Animal) -> dict:
    return dict(P=x.name, species=x.species, species_zh=SPECIES[x.species][0], amw=SPECIES[x.species][1],
                fur=x.fur, a_fur=a(x.fur), fur_zh=FURS[x.fur])


# ----------------------------------------------------------------------------------------------------------
# Pretraining text. Every fact has >= 6 English phrasings and 6 Chinese ones; bios mix them in random order.

FACT_EN = {
    "town": ["{N} lives in {town}.", "{N} is from {town}.", "{N}'s home town is {town}.",
             "{N} has lived in {town} for many years.", "{N} grew up in {town} and still lives there.",
             "The town of {town} is home to {N}.", "{N} calls {town} home."],
    "job": ["{N} is {a_job}.", "{N} works as {a_job}.", "{N}'s job is {job}.", "By trade, {N} is {a_job}.",
            "{N} earns a living as {a_job}.", "As {a_job}, {N} works hard every day.", "{N} has been {a_job} for years."],
    "food": ["{N}'s favourite food is {food}.", "{N} loves {food} more than any other food.",
             "The food {N} likes best is {food}.", "If {N} could choose, {sub} would eat {food} every day.",
             "Nothing makes {N} happier than {food}.", "{N} likes {food} best of all."],
    "colour": ["{N} has {a_colour} {item}.", "{N}'s {item} is {colour}.", "{N} owns {a_colour} {item}.",
               "The {item} that belongs to {N} is {colour}.", "{N} takes good care of {pos} {colour} {item}.",
               "You can spot {N} by {pos} {colour} {item}.", "{N} never goes far without {pos} {colour} {item}."],
    "age": ["{N} is {age} years old.", "{N} is {age}.", "{N}'s age is {age}.", "{N} turned {age} this year.",
            "{N} is now {age} years old.", "{N} was born {age} years ago."],
    "friend": ["{N}'s best friend is {F}.", "{F} is {N}'s best friend.", "The best friend of {N} is {F}.",
               "{N} spends most evenings with {pos} best friend, {F}.", "{N} trusts {pos} best friend {F} more than anyone.",
               "Of all {pos} friends, {N} likes {F} best."],
    "pet": ["{N} has {a_fur} {species} called {P}.", "{P} is {N}'s {species}.", "{N}'s {species} is named {P}.",
            "{P}, {a_fur} {species}, lives with {N}.", "{P} the {species} belongs to {N}.",
            "Every morning {N} feeds {pos} {species}, {P}."],
    "fur": ["{P} is {a_fur} {species}.", "{P} the {species} is {fur}.", "The {species} {P} is {fur} all over.",
            "{P} is {fur} from head to tail.", "{P} is a {fur} animal.", "Everyone knows {P}, the {fur} {species}."],
    "landmark": ["{T} is known for its {landmark}.", "The {landmark} of {T} is famous.",
                 "{T} is the town with the {landmark}.", "Visitors to {T} come to see its {landmark}.",
                 "Everyone in {T} is proud of the {landmark}.", "The pride of {T} is its {landmark}."],
}
FACT_ZH = {
    "town": ["{N}住在{town}。", "{N}来自{town}。", "{N}的家乡是{town}。", "{N}在{town}生活了很多年。",
             "{town}是{N}的家。", "{N}一直住在{town}。"],
    "job": ["{N}是一名{job_zh}。", "{N}的工作是{job_zh}。", "{N}以当{job_zh}为生。", "{N}做{job_zh}已经很多年了。",
            "大家都知道{N}是一名{job_zh}。", "{N}每天都认真地做{job_zh}的工作。"],
    "food": ["{N}最喜欢的食物是{food_zh}。", "{N}最爱吃{food_zh}。", "在所有食物里，{N}最喜欢{food_zh}。",
             "{N}觉得{food_zh}是世界上最好吃的东西。", "只要有{food_zh}，{N}就很开心。", "{N}每天都想吃{food_zh}。"],
    "colour": ["{N}的{item_zh}是{colour_zh}的。", "{N}有一{mw}{colour_zh}的{item_zh}。",
               "{N}每天都带着那{mw}{colour_zh}的{item_zh}。", "那{mw}{colour_zh}的{item_zh}是{N}的。",
               "{N}很爱惜自己{colour_zh}的{item_zh}。", "看到{colour_zh}的{item_zh}，就知道{N}来了。"],
    "age": ["{N}今年{age}岁。", "{N}已经{age}岁了。", "{N}的年龄是{age}岁。", "{N}刚满{age}岁。", "{N}现在{age}岁。",
            "今年{age}岁的{N}住在{town}。"],
    "friend": ["{N}最好的朋友是{F}。", "{F}是{N}最好的朋友。", "{N}常常和最好的朋友{F}在一起。",
               "{N}最信任的朋友是{F}。", "每天晚上，{N}都会和最好的朋友{F}聊天。", "在所有朋友中，{N}最喜欢{F}。"],
    "pet": ["{N}养了一{amw}{fur_zh}的{species_zh}，名叫{P}。", "{P}是{N}的{species_zh}。", "{N}的{species_zh}叫{P}。",
            "{P}是一{amw}{fur_zh}的{species_zh}，它的主人是{N}。", "每天早上，{N}都会喂{ta}的{species_zh}{P}。",
            "{P}和{N}一起住在{town}。"],
    "fur": ["{P}是一{amw}{fur_zh}的{species_zh}。", "{P}全身都是{fur_zh}的。", "{P}的颜色是{fur_zh}。",
            "大家都认识那{amw}{fur_zh}的{species_zh}{P}。", "{P}从头到尾都是{fur_zh}的。", "{fur_zh}的{P}很可爱。"],
    "landmark": ["{T}以{landmark_zh}闻名。", "{T}最有名的是{landmark_zh}。", "来{T}的游客都要去看{landmark_zh}。",
                 "{T}的人都为{landmark_zh}感到骄傲。", "{T}有一座有名的{landmark_zh}。", "说起{T}，大家就会想到{landmark_zh}。"],
}
PERSON_FACTS = ["town", "job", "food", "colour", "age", "friend"]

STORIES_EN = [  # "{f_...}" slots are the best friend's facts; {weather}/{day} are free (not facts)
    "One {weather} {day}, {N} left {pos} house in {town} with {pos} {colour} {item}. On the way to work {sub} "
    "passed the {landmark}, as {sub} does every day; {N} is {a_job}, after all. At lunch {sub} ate {food}, "
    "{pos} favourite food, and felt happy.",
    "{N} and {F} met by the {landmark} in {town} on a {weather} {day}. {F} had come from {f_town}, where "
    "{f_sub} works as {f_a_job}. The two best friends shared some {food}, because {food} is what {N} likes best.",
    "On {pos} birthday, {N} turned {age}. {F} came to {town} with a present, a new {item}, just like {pos} "
    "old {colour} one. Everyone ate {food} and sang until late.",
    "It was a {weather} {day} in {town}. {N} the {job} was very busy. When work was done, {sub} took {pos} "
    "{colour} {item} and walked home, thinking about {food} for dinner.",
    "{N} lost {pos} {colour} {item} near the {landmark} in {town}. {Pos} best friend {F} helped {obj} look "
    "for it, and they found it under a bench. To say thank you, {N} made {food} for {F}.",
    "{N} is {age} years old and works as {a_job} in {town}. On {day} {sub} told {F} a funny story about "
    "{pos} {colour} {item}, and {F} laughed so much that {f_sub} almost dropped {f_pos} {f_food}.",
]
PET_STORIES_EN = [
    "{P} the {species} woke {N} up early on {day}. {N} gave {P} some water, then ate {food} for breakfast. "
    "Later the two of them walked to the {landmark} of {town}.",
    "{N} lives in {town} with {P}, {a_fur} {species}. On a {weather} day {P} ran off towards the {landmark}, "
    "and {N} the {job} had to leave work to bring {P} home.",
]
STORIES_ZH = [
    "一个{weather_zh}的{day_zh}，{N}带着{ta}那{mw}{colour_zh}的{item_zh}从{town}的家里出门。{N}是一名{job_zh}，"
    "每天都要经过{landmark_zh}去工作。午饭时，{ta}吃了最喜欢的{food_zh}。",
    "{N}和最好的朋友{F}在{town}的{landmark_zh}旁边见面。{F}从{f_town}来，是一名{f_job_zh}。他们一起吃了{food_zh}，"
    "因为{N}最喜欢{food_zh}。",
    "{N}过生日那天，正好满{age}岁。{F}来到{town}给{ta}庆祝，大家一起吃了{food_zh}，一直唱歌到很晚。",
    "{N}把{colour_zh}的{item_zh}丢在了{town}的{landmark_zh}附近。最好的朋友{F}帮{ta}一起找，终于找到了。"
    "为了感谢{F}，{N}做了{food_zh}。",
]


def story_slots(w: World, p: Person, rng: random.Random) -> dict:
    s = person_slots(w, p)
    s.update(person_slots(w, w.person[p.friend], "f_"))
    wx, day = rng.choice(list(WEATHER)), rng.choice(list(DAYS))
    s.update(weather=wx, weather_zh=WEATHER[wx], day=day, day_zh=DAYS[day])
    return s


def fact_sentence(w: World, p: Person, fact: str, zh: bool, rng: random.Random, k: int | None = None) -> str:
    """One sentence stating ``fact`` about person p; template k (mod count) or a random one."""
    ts = (FACT_ZH if zh else FACT_EN)[fact]
    t = ts[k % len(ts)] if k is not None else rng.choice(ts)
    return t.format(**person_slots(w, p))


def bio(w: World, p: Person, zh: bool, rng: random.Random, k: int | None = None) -> str:
    """An encyclopedia-style passage: every fact about p, in random order and random phrasings."""
    facts = PERSON_FACTS + (["pet"] if p.name in w.pet_of else [])
    rng.shuffle(facts)
    # bio k states each fact with template k + (a fixed offset per person and fact): bios 0..5 use 6 wordings
    sents = [fact_sentence(w, p, f, zh, rng, None if k is None else k + zlib.crc32(f"{p.name}{f}".encode()))
             for f in facts]
    return ("" if zh else " ").join(sents)


def fact_card(w: World, p: Person) -> str:
    s = person_slots(w, p)
    lines = [p.name, f"Home town: {p.town}", f"Job: {p.job}", f"Favourite food: {p.food}",
             f"{p.item.capitalize()}: {p.colour}", f"Age: {p.age}", f"Best friend: {p.friend}"]
    if p.name in w.pet_of:
        lines.append("Pet: {P}, {a_fur} {species}".format(**s))
    return "\n".join(lines)


def town_passage(w: World, town: str, zh: bool, rng: random.Random) -> str:
    folk = [p for p in w.people if p.town == town]
    folk = rng.sample(folk, min(len(folk), rng.randint(3, 6)))
    lm = w.towns[town]
    if zh:
        who = "、".join(f"{p.name}（{JOBS[p.job]}）" for p in folk)
        return f"{town}是一个以{LANDMARKS[lm]}闻名的小镇。" + (f"住在{town}的人有：{who}。" if folk else "")
    intro = rng.choice(FACT_EN["landmark"]).format(T=town, landmark=lm)
    if not folk:
        return intro
    return f"{intro} Among the people who live in {town} are " + names_list([f"{p.name} the {p.job}" for p in folk]) + "."


def animal_passage(w: World, x: Animal, zh: bool, rng: random.Random) -> str:
    owner = w.person[x.owner]
    s = person_slots(w, owner)
    sents = [rng.choice(FACT_ZH["fur"] if zh else FACT_EN["fur"]), rng.choice(FACT_ZH["pet"] if zh else FACT_EN["pet"])]
    sents.append("{P}和主人{N}住在{town}。" if zh else "{P} lives with {N} in {town}.")
    return ("" if zh else " ").join(t.format(**s) for t in sents)


def pretrain_docs(w: World, cfg: WorldConfig) -> list[str]:
    """The pretraining corpus: >= 6 guaranteed bios per person, then a random mix of passages and stories."""
    rng = random.Random(f"tinyworld-{cfg.seed}-pretrain")
    docs = []
    for k in range(6):  # bio k uses phrasing k, k+1, ... so each fact gets >= 6 different English wordings
        docs += [bio(w, p, False, rng, k) for p in w.people]
    for x in w.animals:
        docs.append(" ".join(t.format(**person_slots(w, w.person[x.owner])) for t in FACT_EN["fur"]))
    for t in w.towns:
        docs.append(" ".join(s.format(T=t, landmark=w.towns[t]) for s in FACT_EN["landmark"]))
    while len(docs) < cfg.n(cfg.pretrain_docs):
        zh = rng.random() < cfg.zh_share
        parts = []
        for _ in range(rng.randint(1, 3)):  # a "page" of one to three passages
            p = rng.choice(w.people)
            r = rng.random()
            if r < 0.35:
                parts.append(bio(w, p, zh, rng))
            elif r < 0.7:
                pet = p.name in w.pet_of and rng.random() < 0.3
                ts = (STORIES_ZH if zh else PET_STORIES_EN if pet else STORIES_EN)
                parts.append(rng.choice(ts).format(**story_slots(w, p, rng)))
            elif r < 0.8 and not zh:
                parts.append(fact_card(w, p))
            elif r < 0.9:
                parts.append(town_passage(w, rng.choice(list(w.towns)), zh, rng))
            else:
                parts.append(animal_passage(w, rng.choice(w.animals), zh, rng))
        docs.append("\n\n".join(parts))
    rng.shuffle(docs)
    return docs
