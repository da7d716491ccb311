"""What the synthetic duplex scenarios say: user lines, scripted assistant turns, tool schemas.

Written for this project (no data set is downloaded). Kept apart from the generator so the
generator reads as timing logic and this file can grow without touching it. Expected tool-call
arguments are canonical values (``10``, not ``"ten"``): the tool-call metrics compare them with
``reward_models.verifiable.values_equal``, which already accepts spelled-out numbers and case.
"""

from __future__ import annotations

from typing import Any

# normal: a complete question; the user stops and the assistant should take the turn.
NORMAL_QUESTIONS = (
    "What time does the library open on Sunday?",
    "Can you recommend a good book about the ocean?",
    "How do I make my tomato plants grow faster?",
    "What is the difference between a frog and a toad?",
    "How long should I boil an egg for a soft yolk?",
    "Why is the sky blue during the day?",
    "What should I pack for a weekend of hiking?",
    "How many bones are there in the human hand?",
)

# pause: the user stops mid-sentence (first part), thinks, and goes on (second part).
PAUSED_QUESTIONS = (
    ("I was wondering if you could", "tell me how to make a good cup of tea."),
    ("So my question is", "what is the tallest mountain in Europe?"),
    ("Could you explain", "how a rainbow forms after the rain?"),
    ("I need some help with", "planning a birthday party for my sister."),
    ("What I really want to know is", "whether cats can see in the dark."),
    ("Can you tell me", "the best way to learn to play the guitar?"),
)

# interrupt: the user asks, the assistant gives a long answer, the user barges in.
INTERRUPTS = (
    (
        "Tell me about the history of Rome.",
        "Rome began as a small settlement on the river Tiber, and over many centuries it grew into the "
        "centre of an empire that reached from Britain to Egypt, with roads, laws and cities everywhere.",
        "Sorry, wait, I only need the short version.",
    ),
    (
        "How does a car engine work?",
        "A car engine burns a mix of fuel and air inside its cylinders, and each small explosion pushes "
        "a piston down, which turns the crankshaft and finally the wheels of the car.",
        "Hold on, I meant an electric car.",
    ),
    (
        "What can I cook with rice and beans?",
        "There are many dishes you can make, for example a simple rice and bean bowl with onions and "
        "spices, a bean soup with rice on the side, or stuffed peppers baked in the oven.",
        "Actually, stop, I also have some chicken.",
    ),
    (
        "Explain how airplanes stay in the air.",
        "Airplanes stay up because their wings are shaped so that air moving over the top travels in a "
        "way that lowers the pressure above the wing, and the higher pressure below pushes it up.",
        "Wait, wait, what about helicopters?",
    ),
)

# backchannel: while the assistant explains, the user signals "go on".
BACKCHANNEL_QUESTIONS = (
    (
        "Can you walk me through making bread at home?",
        "First you mix flour, water, salt and yeast in a large bowl, then you knead the dough for about "
        "ten minutes until it feels smooth, and after that you let it rise in a warm place for an hour "
        "before you shape it and bake it in a hot oven.",
    ),
    (
        "How do I start running if I have never done it?",
        "Begin with short sessions where you alternate one minute of easy running with two minutes of "
        "walking, do that three times a week, and every week add a little more running time until you "
        "can run for twenty minutes without stopping.",
    ),
    (
        "What is the best way to learn a new language?",
        "The best way is to practise a little every single day, listen to people speaking it as often as "
        "you can, learn the most common words first, and try to speak with someone early even when you "
        "still make a lot of mistakes.",
    ),
)
BACKCHANNELS = ("mm hmm", "yeah", "uh huh", "right", "okay")

# Tool schemas (OpenAI function form) offered in the tool-call scenarios.
TOOLS: dict[str, dict[str, Any]] = {
    "get_weather": {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather forecast for a city on a given day.",
            "parameters": {
                "type": "object",
                "required": ["city", "day"],
                "properties": {"city": {"type": "string"}, "day": {"type": "string", "enum": ["today", "tomorrow"]}},
            },
        },
    },
    "set_timer": {
        "type": "function",
        "function": {
            "name": "set_timer",
            "description": "Start a countdown timer.",
            "parameters": {"type": "object", "required": ["minutes"], "properties": {"minutes": {"type": "integer"}}},
        },
    },
    "create_reminder": {
        "type": "function",
        "function": {
            "name": "create_reminder",
            "description": "Create a reminder with a short text.",
            "parameters": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
        },
    },
    "play_music": {
        "type": "function",
        "function": {
            "name": "play_music",
            "description": "Play music of a genre.",
            "parameters": {"type": "object", "required": ["genre"], "properties": {"genre": {"type": "string"}}},
        },
    },
    "set_lights": {
        "type": "function",
        "function": {
            "name": "set_lights",
            "description": "Switch the lights of a room on or off.",
            "parameters": {
                "type": "object",
                "required": ["room", "on"],
                "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
            },
        },
    },
    "lock_door": {
        "type": "function",
        "function": {
            "name": "lock_door",
            "description": "Lock a door of the house.",
            "parameters": {"type": "object", "required": ["door"], "properties": {"door": {"type": "string"}}},
        },
    },
}


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


# tool_call: the request needs one tool, or several in the spoken order (multi-action cases).
TOOL_REQUESTS: tuple[tuple[str, list[dict[str, Any]]], ...] = (
    ("What will the weather be like in Paris tomorrow?", [_call("get_weather", city="Paris", day="tomorrow")]),
    ("Please set a timer for ten minutes.", [_call("set_timer", minutes=10)]),
    ("Play some jazz music for me.", [_call("play_music", genre="jazz")]),
    ("Remind me to call my mother.", [_call("create_reminder", text="call my mother")]),
    (
        "Check the weather in Berlin today and then remind me to pack an umbrella.",
        [_call("get_weather", city="Berlin", day="today"), _call("create_reminder", text="pack an umbrella")],
    ),
    (
        "Set a timer for five minutes and then play some classical music.",
        [_call("set_timer", minutes=5), _call("play_music", genre="classical")],
    ),
    (
        "Turn off the kitchen lights and then lock the front door.",
        [_call("set_lights", room="kitchen", on=False), _call("lock_door", door="front")],
    ),
)

# no_tool_call: tools are offered but the request needs none of them.
NO_TOOL_REQUESTS = (
    "Thanks, that was really helpful.",
    "What does the word umbrella come from?",
    "Tell me a short joke about cats.",
    "How do you say good morning in French?",
    "Do you think music helps people concentrate?",
    "What is your favourite season of the year?",
)
