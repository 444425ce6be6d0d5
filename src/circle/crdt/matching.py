"""Suggest offers for a need and needs for an offer.

Score = 3 for the same category + 2 per shared tag + 1 per shared meaningful
word in title/details (+1 more when the zones match and the pair already
scores). Plain and explainable: the member sees *why* each suggestion fits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from circle.crdt.gather_records import Skill
from circle.crdt.model import Need, Offer

_STOP = frozenset(
    "a an and are at be by can for from has have i in is it me my need needs of offer offers on or "
    "our please some the to up us we with you your any "
    # numbers, quantities and filler that two unrelated posts share ("words two")
    "one two three four five six seven eight nine ten day days week weeks a lot also all just "
    "get got help just more most much new now only other out over per same than that their them "
    "then there these they this those time very was were what when where which who will would".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP}


@dataclass(frozen=True)
class Match:
    score: int
    reasons: tuple[str, ...]
    need: Need
    offer: Offer


def score(need: Need, offer: Offer) -> tuple[int, tuple[str, ...]]:
    points, reasons = 0, []
    if need.category and need.category == offer.category:
        points += 3
        reasons.append(f"category {need.category}")
    shared_tags = sorted(need.tags & offer.tags)
    if shared_tags:
        points += 2 * len(shared_tags)
        reasons.append("tags " + ", ".join(shared_tags))
    shared_words = sorted(words(f"{need.title} {need.details}") & words(f"{offer.title} {offer.details}"))
    if shared_words:
        points += len(shared_words)
        reasons.append("both mention " + ", ".join(shared_words[:5]))
    if points and need.zone and need.zone == offer.zone:
        points += 1
        reasons.append(f"zone {need.zone}")
    return points, tuple(reasons)


def offers_for(need: Need, offers: list[Offer], limit: int = 10) -> list[Match]:
    found = []
    for offer in offers:
        points, reasons = score(need, offer)
        if points > 0:
            found.append(Match(points, reasons, need, offer))
    return sorted(found, key=lambda m: (-m.score, m.offer.id))[:limit]


def needs_for(offer: Offer, needs: list[Need], limit: int = 10) -> list[Match]:
    found = []
    for need in needs:
        points, reasons = score(need, offer)
        if points > 0:
            found.append(Match(points, reasons, need, offer))
    return sorted(found, key=lambda m: (-m.score, -m.need.urgency.rank, m.need.id))[:limit]


# --- skills (a member who can do or teach what a need asks for) ----------------------


@dataclass(frozen=True)
class SkillMatch:
    score: int
    reasons: tuple[str, ...]
    need: Need
    skill: Skill


def skill_score(need: Need, skill: Skill) -> tuple[int, tuple[str, ...]]:
    """Same rules as for offers: category, then shared words (a need's tags
    count as words of the skill's title, category and details)."""
    points, reasons = 0, []
    if need.category and need.category == skill.category:
        points += 3
        reasons.append(f"category {need.category}")
    skill_words = words(f"{skill.title} {skill.details} {skill.category}")
    shared_tags = sorted(t for t in need.tags if t in skill_words)
    if shared_tags:
        points += 2 * len(shared_tags)
        reasons.append("tags " + ", ".join(shared_tags))
    shared = sorted((words(f"{need.title} {need.details}") & skill_words) - set(shared_tags))
    if shared:
        points += len(shared)
        reasons.append("words " + ", ".join(shared[:5]))
    return points, tuple(reasons)


def skills_for(need: Need, skills: list[Skill], limit: int = 5) -> list[SkillMatch]:
    """Listed skills of other members that may fit a need. Ordered by fit,
    then skill id: never by who the member is or how much they gave."""
    found = []
    for skill in skills:
        if skill.author == need.author or not skill.listed:
            continue
        points, reasons = skill_score(need, skill)
        if points > 0:
            found.append(SkillMatch(points, reasons, need, skill))
    return sorted(found, key=lambda m: (-m.score, m.skill.id))[:limit]
