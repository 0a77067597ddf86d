"""The human seed pool: hand-written Python course questions (CourseGPT-zh, Sec. 3.1).

Written for this project by its developers; they are the in-context style examples of question
generation (6 per prompt) and of expansion rounds (3 per prompt).
"""

SEED_QUESTIONS: tuple[str, ...] = (
    "What is the difference between a list and a tuple in Python?",
    "Why does modifying a default list argument affect later calls of the function?",
    "How does a for loop know when to stop iterating over an object?",
    "What happens when you assign one variable to another that refers to a list?",
    "When should you use a dictionary instead of a list?",
    "What does the `is` operator check, and how is it different from `==`?",
    "How do you catch only one kind of exception and let the others propagate?",
    "What is the purpose of the `finally` clause in a try statement?",
    "Why can a tuple be used as a dictionary key while a list cannot?",
    "What does `yield` do inside a function?",
    "How do keyword-only arguments differ from positional arguments?",
    "What is the scope of a variable assigned inside a nested function?",
    "When do you need the `nonlocal` statement?",
    "What does the `with` statement guarantee about a file that it opens?",
    "How is integer division different from true division in Python 3?",
    "What is a slice, and what do negative indices mean in a slice?",
    "How can a class customize what `len()` returns for its instances?",
    "What is the difference between a class attribute and an instance attribute?",
    "Why is `self` passed explicitly to methods?",
    "What does a decorator do to the function it decorates?",
    "How does Python decide which method to call when a class has several base classes?",
    "What is a generator expression and how does it save memory?",
    "What does the `global` statement change about an assignment?",
    "How do you make a copy of a dictionary that does not share nested lists?",
    "What does `if __name__ == '__main__':` protect against?",
    "How does `import` find a module, and what is cached after the first import?",
    "What is the difference between `str()` and `repr()` of an object?",
    "Why do floating-point numbers sometimes print surprising decimals?",
    "What does the `else` clause of a loop do?",
    "How can you unpack a sequence into several variables in one assignment?",
    "What is a lambda expression, and what can it not contain?",
    "How do sets remove duplicates, and what must their elements support?",
)
